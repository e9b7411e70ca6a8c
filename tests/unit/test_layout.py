"""The package's layout: methods live in their own folders and reach the engine only through the kit.

* no engine file (``workflows/engine``, ``workflows/pipeline``, ``slurm``, ``sharding``) names a method;
* a method's (or a shared folder's) workflow code imports ``frugalcv.workflows.kit``, never the engine's modules directly;
* ``models`` and ``sharding`` import neither each other nor MLflow, submitit or torch.distributed;
* every stage that ships is registered with a typed params dataclass.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "frugalcv"
METHODS = ("blockdrop", "dcan", "adaframe", "liteeval", "scn")
#: workflow folders that several methods share (their stages follow the same rules as a method's)
SHARED = ("video",)
METHOD_NAME = re.compile(r"\b(" + "|".join(METHODS) + r")\b", re.IGNORECASE)
#: dataset kinds named after the experiment they were made for (the shard kind's string only)
DATASET_KINDS = ('"scn-shapes"', '"scn-digit-scenes"')
ENGINE_DIRS = ("workflows/engine", "workflows/pipeline", "slurm", "sharding")
ENGINE_MODULES = ("frugalcv.workflows.engine", "frugalcv.workflows.pipeline", "frugalcv.slurm")


def python_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (PACKAGE / d).rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def method_dirs() -> list[Path]:
    return sorted(p for p in (PACKAGE / "workflows").iterdir()
                  if (p / "__init__.py").exists() and p.name not in ("engine", "pipeline"))


def test_the_engine_names_no_method():
    hits = [f"{p.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
            for p in python_files(*ENGINE_DIRS) for n, line in enumerate(p.read_text().splitlines(), 1)
            if METHOD_NAME.search(_without_kinds(line))]
    assert not hits, "engine files name a method:\n" + "\n".join(hits)


def _without_kinds(line: str) -> str:
    for kind in DATASET_KINDS:
        line = line.replace(kind, '""')
    return line


def test_the_grep_catches_a_method_name():
    assert METHOD_NAME.search("uses: BlockDrop.pretrain") and not METHOD_NAME.search("scnd blockdropper")


@pytest.mark.parametrize("folder", method_dirs(), ids=lambda p: p.name)
def test_method_code_reaches_the_engine_only_through_the_kit(folder):
    assert folder.name in METHODS + SHARED, f"{folder}: a workflow folder that is not a known method"
    bad = [f"{p.relative_to(PACKAGE.parent)}:{line}: {module}" for p in folder.rglob("*.py")
           for line, module in imported_modules(p) if module.startswith(ENGINE_MODULES)]
    assert not bad, "import the stage kit (frugalcv.workflows.kit) instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("part,other", [("models", "frugalcv.sharding"), ("sharding", "frugalcv.models")])
def test_models_and_sharding_stay_independent(part, other):
    forbidden = (other, "frugalcv.workflows", "frugalcv.slurm", "mlflow", "submitit", "torch.distributed")
    bad = [f"{p.relative_to(PACKAGE.parent)}:{line}: {module}" for p in python_files(part)
           for line, module in imported_modules(p) if module.startswith(forbidden)]
    assert not bad, "\n".join(bad)


def test_every_shipped_stage_has_typed_params():
    from frugalcv.workflows.pipeline.stages import registered_stages, stage_info

    for name in registered_stages():
        info = stage_info(name)
        if info.fn.__module__.startswith("frugalcv."):
            assert info.params is not None, f"stage {name!r} has no params dataclass"
