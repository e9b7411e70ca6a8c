"""Every shipped pipeline loads and validates (``frugalcv run --dry-run``'s path), and mistakes in
any of their stages are reported when the file loads, naming the file, the line, the dotted key
and what is allowed, before any stage runs."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from frugalcv.cli import main
from frugalcv.errors import ConfigError
from frugalcv.workflows.pipeline.config import load_pipeline
from frugalcv.workflows.pipeline.stages import stage_info
from frugalcv.workflows.pipeline.yamlfile import key_lines

REPO = Path(__file__).resolve().parents[2]
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))
FRUGALCV = Path(sys.executable).parent / "frugalcv"


def _stages(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["stages"]


STAGES = [(p, s["name"]) for p in PIPELINES for s in _stages(p)]
STAGE_IDS = [f"{p.stem}:{name}" for p, name in STAGES]
#: (file, stage, a required input of it)
REQUIRED = [(p, s["name"], name) for p in PIPELINES for s in _stages(p)
            for name in stage_info(s["uses"]).inputs]


def _uses(path: Path, stage: str) -> str:
    return next(s["uses"] for s in _stages(path) if s["name"] == stage)


def _allowed_params(path: Path, stage: str) -> list[str]:
    return [f.name for f in dataclasses.fields(stage_info(_uses(path, stage)).params) if f.init]


def _typo(key: str) -> str:
    """``batch_size`` -> ``batch_siez``: the last two letters swapped."""
    return key[:-2] + key[-1] + key[-2]


def _insert_before(text: str, line: int, new: str) -> str:
    """``text`` with ``new`` (indented like line ``line``, 1-based) inserted above that line."""
    lines = text.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[line - 1]).group(0)
    lines.insert(line - 1, f"{indent}{new}\n")
    return "".join(lines)


def _misspelt(path: Path, stage: str, tmp_path: Path) -> tuple[Path, int, str, str]:
    """A copy of ``path`` whose stage ``stage`` has a misspelt param above its first real one:
    (file, line of the bogus key, bogus key, the key it misspells)."""
    text = path.read_text()
    lines = key_lines(text)
    prefix = f"stages.{stage}.params."
    keys = [k[len(prefix):] for k in lines if k.startswith(prefix) and "." not in k[len(prefix):]]
    real = next(k for k in keys if len(k) >= 4)  # long enough for a "did you mean"
    first = min(lines[prefix + k] for k in keys)
    bogus = _typo(real)
    bad = tmp_path / f"bad {path.name}"
    bad.write_text(_insert_before(text, first, f"{bogus}: 1"))
    return bad, first, bogus, real


# ------------------------------------------------------------------------------ shipped files


def test_every_shipped_pipeline_is_checked():
    names = {p.name for p in PIPELINES}
    assert {"blockdrop-cifar10-resnet110.yaml", "blockdrop-cifar100-resnet110.yaml",
            "blockdrop-imagenet-resnet101.yaml", "blockdrop-demo.yaml"} <= names
    assert len(STAGES) >= 5 * len(PIPELINES)


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_shipped_pipeline_loads_and_validates(path):
    cfg = load_pipeline(path)
    assert [s.name for s in cfg.stages] == [s["name"] for s in _stages(path)]
    for stage in cfg.stages:  # every params mapping builds into its stage's dataclass
        info = stage_info(stage.uses)
        params = info.build_params(stage.params)
        assert info.check_inputs(stage.inputs) is None
        for key, value in stage.params.items():
            assert hasattr(params, key), (stage.name, key, value)


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_shipped_pipeline_dry_run(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the shipped storage.root is relative: ./frugalcv-runs
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    cfg = load_pipeline(path)
    assert out.startswith(f"pipeline {cfg.name} ")
    for i, stage in enumerate(cfg.stages, start=1):
        assert f"{i}. {stage.name}  uses={stage.uses}" in out
    if cfg.executor.kind == "slurm":
        assert out.count("--- sbatch for stage ") == len(cfg.stages)
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


# ------------------------------------------------------------------------------ misspelt params


@pytest.mark.parametrize(("path", "stage"), STAGES, ids=STAGE_IDS)
def test_misspelt_param_in_the_file_names_file_line_key_and_allowed(path, stage, tmp_path):
    bad, line, bogus, real = _misspelt(path, stage, tmp_path)
    with pytest.raises(ConfigError) as err:
        load_pipeline(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}, line {line}: stages.{stage}.params.{bogus}: unknown key '{bogus}'"), msg
    assert f"did you mean '{real}'?" in msg, msg
    allowed = msg.split("Allowed keys: ", 1)[1]
    assert allowed.split(", ") == sorted(_allowed_params(path, stage)), msg
    assert "\n" not in msg


@pytest.mark.parametrize(("path", "stage"), STAGES, ids=STAGE_IDS)
def test_misspelt_param_override_names_the_override(path, stage):
    override = f"stages.{stage}.params.bogus_key=1"
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, [override])
    msg = str(err.value)
    assert msg.startswith(f"{path} (override -o {override}): stages.{stage}.params.bogus_key: "
                          "unknown key 'bogus_key'"), msg
    assert "Allowed keys: " + ", ".join(sorted(_allowed_params(path, stage))) in msg


def _cli_fails_before_any_stage(bad: Path, root: Path, capsys, expected: str) -> None:
    code = main(["run", str(bad), "-o", f"storage.root={root}", "-o", "executor.kind=inline", "--smoke"])
    assert code != 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and expected in err, err
    assert "\n" not in err and "Traceback" not in captured.err + captured.out
    assert not root.exists()  # nothing ran: no run folder, no tracking store


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_cli_run_of_a_misspelt_file_prints_one_line_and_runs_nothing(path, tmp_path, capsys):
    stage = _stages(path)[1]["name"]  # a training stage: it would be the first to take time
    bad, line, bogus, _ = _misspelt(path, stage, tmp_path)
    _cli_fails_before_any_stage(bad, tmp_path / "runs", capsys,
                                f"{bad}, line {line}: stages.{stage}.params.{bogus}: unknown key")


def test_frugalcv_command_prints_one_line_no_traceback(tmp_path):
    path = REPO / "pipelines" / "blockdrop-cifar10-resnet110.yaml"
    bad, line, bogus, _ = _misspelt(path, "finetune", tmp_path)
    root = tmp_path / "runs"
    proc = subprocess.run([str(FRUGALCV), "run", str(bad), "-o", f"storage.root={root}", "--smoke"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {bad}, line {line}: stages.finetune.params.{bogus}: unknown key")
    assert not root.exists()


# ------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize(("path", "stage"), STAGES, ids=STAGE_IDS)
def test_unknown_input_names_file_line_and_allowed_inputs(path, stage, tmp_path):
    text = path.read_text()
    lines = key_lines(text)
    info = stage_info(_uses(path, stage))
    key = f"stages.{stage}.inputs"
    if key in lines:  # a line above the stage's first input
        first = min(v for k, v in lines.items() if k.startswith(key + "."))
        bad_text = _insert_before(text, first, "tarin: /data/somewhere")
        line = first
    else:  # the stage has no inputs: give it one after its name
        line = lines[f"stages.{stage}.uses"]
        bad_text = _insert_before(text, line, "inputs: {tarin: /data/somewhere}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(bad_text)
    with pytest.raises(ConfigError) as err:
        load_pipeline(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}, line {line}: {key}.tarin: "), msg
    allowed = info.inputs + info.optional_inputs
    if allowed:
        assert "unknown key 'tarin'" in msg and "Allowed keys: " + ", ".join(sorted(allowed)) in msg, msg
        if "train" in allowed:
            assert "did you mean 'train'?" in msg
    else:
        assert "takes no inputs" in msg, msg


@pytest.mark.parametrize(("path", "stage", "name"), REQUIRED,
                         ids=[f"{p.stem}:{s}:{n}" for p, s, n in REQUIRED])
def test_missing_required_input_names_file_line_and_what_it_takes(path, stage, name, tmp_path):
    text = path.read_text()
    lines = key_lines(text)
    key = f"stages.{stage}.inputs"
    rows = text.splitlines(keepends=True)
    del rows[lines[f"{key}.{name}"] - 1]
    if not [k for k in lines if k.startswith(key + ".") and k != f"{key}.{name}"]:  # its only input
        i = lines[key] - 1
        rows[i] = rows[i].replace("inputs:", "inputs: {}", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text("".join(rows))
    with pytest.raises(ConfigError) as err:
        load_pipeline(bad)
    msg = str(err.value)
    info = stage_info(_uses(path, stage))
    assert msg.startswith(f"{bad}, line {lines[key]}: {key}.{name}: required by stage function "
                          f"'{info.name}' (it takes {', '.join(info.inputs + info.optional_inputs)})"), msg


def test_input_override_and_cli_report_likewise(tmp_path, capsys):
    path = REPO / "pipelines" / "blockdrop-imagenet-resnet101.yaml"
    override = "stages.curriculum.inputs.vall=/data/val"
    with pytest.raises(ConfigError, match=re.escape(f"{path} (override -o {override}): "
                                                    "stages.curriculum.inputs.vall: unknown key 'vall'")):
        load_pipeline(path, [override])
    text = path.read_text()
    lines = key_lines(text)
    rows = text.splitlines(keepends=True)
    del rows[lines["stages.evaluate.inputs.test"] - 1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("".join(rows))
    _cli_fails_before_any_stage(bad, tmp_path / "runs", capsys,
                                f"line {lines['stages.evaluate.inputs']}: stages.evaluate.inputs.test: "
                                "required by stage function 'blockdrop.evaluate'")
