"""``-o key=value`` overrides and comma-list sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugalcv.errors import ConfigError
from frugalcv.workflows.pipeline.config import load_pipeline
from frugalcv.workflows.pipeline.overrides import parse_sweep

DEMO = Path(__file__).parents[2] / "pipelines" / "blockdrop-demo.yaml"


def load(*overrides: str):
    return load_pipeline(DEMO, list(overrides))


def test_overrides_set_typed_values():
    cfg = load("stages.curriculum.params.gamma=10", "executor.kind=slurm", "executor.slurm.nodes=2",
               "stages.finetune.params.lr=1e-5", "executor.slurm.setup=[module load cuda, source env]",
               "executor.slurm.partition=gpu")
    assert cfg.stage("curriculum").params["gamma"] == 10
    assert cfg.executor.kind == "slurm"
    assert cfg.executor.slurm.nodes == 2
    assert cfg.stage("finetune").params["lr"] == 1e-5
    assert cfg.executor.slurm.setup == ["module load cuda", "source env"]
    assert cfg.executor.slurm.partition == "gpu"


def test_shorthand_stage_param():
    cfg = load("stages.curriculum.gamma=2")
    assert cfg.stage("curriculum").params["gamma"] == 2
    assert "gamma" not in cfg.stage("pretrain").params


def test_new_param_needs_params_path_and_shorthand_typos_are_caught():
    with pytest.raises(ConfigError, match="stages.curriculum.params.new_knob: unknown key 'new_knob'"):
        load("stages.curriculum.params.new_knob=3")  # a stage's params are its dataclass's fields
    assert load_pipeline(DEMO, ["stages.curriculum.params.new_knob=3"], validate=False).stage(
        "curriculum").params["new_knob"] == 3
    with pytest.raises(ConfigError) as info:
        load("stages.curriculum.gamam=2")
    message = str(info.value)
    assert "stages.curriculum.gamam" in message and "did you mean 'gamma'?" in message
    assert "stages.<stage>.params.<key>" in message


def test_stage_resources_and_free_form_mappings():
    cfg = load("stages.pretrain.resources.gpus_per_node=2", "executor.slurm.additional.exclude=node[1-3]",
               "stages.finetune.engine=deepspeed", "stages.finetune.deepspeed.zero_stage=3",
               "stages.finetune.deepspeed.config.gradient_clipping=1.0")
    assert cfg.stage_resources("pretrain").gpus_per_node == 2
    assert cfg.stage_resources("curriculum").gpus_per_node == 0
    assert cfg.executor.slurm.additional == {"exclude": "node[1-3]"}
    ds = cfg.stage("finetune").deepspeed
    assert ds.zero_stage == 3 and ds.config == {"gradient_clipping": 1.0}


def test_storage_root_override_reaches_placeholders(tmp_path):
    cfg = load(f"storage.root={tmp_path}/r")
    assert cfg.stage("digits").params["dst"] == f"{tmp_path}/r/data/digits"
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/r/mlflow.db"


@pytest.mark.parametrize("override, expected", [
    ("executor.slurm.nodez=2", "executor.slurm.nodez: unknown key 'nodez'; did you mean 'nodes'?"),
    ("executr.kind=slurm", "executr: unknown key 'executr'; did you mean 'executor'?"),
    ("stages.curriculm.gamma=2", "no stage named 'curriculm'; stages: digits, pretrain, curriculum, finetune, "
                                 "evaluate; did you mean 'curriculum'?"),
    ("stages.pretrain.resources.gpu=1", "stages.pretrain.resources.gpu: unknown key 'gpu'"),
    ("executor.kind.x=1", "executor.kind is a single value, so it has no key 'x'"),
    ("stages.pretrain=1", "give a key of stage 'pretrain'"),
    ("executor.kind", "expected key=value"),
    ("executor..kind=x", "expected key=value"),
])
def test_bad_override_paths(override, expected):
    with pytest.raises(ConfigError) as info:
        load(override)
    assert f"override -o {override}" in str(info.value) or f"override -o {override!r}" in str(info.value)
    assert expected in str(info.value)


def test_bad_override_value_is_attributed_to_the_override():
    with pytest.raises(ConfigError) as info:
        load("executor.slurm.nodes=two")
    assert "(override -o executor.slurm.nodes=two): executor.slurm.nodes: 'two' is not an integer" in str(info.value)
    with pytest.raises(ConfigError, match=r"override -o executor.kind=cloud.*'cloud' is not allowed"):
        load("executor.kind=cloud")
    with pytest.raises(ConfigError, match="newlines"):
        load('executor.slurm.partition="a\\nb"')


def test_sweep_single_key():
    assert parse_sweep(["stages.curriculum.gamma=2,5,10", "executor.kind=local"]) == [
        ["stages.curriculum.gamma=2", "executor.kind=local"],
        ["stages.curriculum.gamma=5", "executor.kind=local"],
        ["stages.curriculum.gamma=10", "executor.kind=local"],
    ]
    runs = [load(*overrides) for overrides in parse_sweep(["stages.curriculum.gamma=2,5,10"])]
    assert [c.stage("curriculum").params["gamma"] for c in runs] == [2, 5, 10]


def test_sweep_product_and_literals():
    assert parse_sweep(["a=1,2", "b=x,y"]) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]
    assert parse_sweep(["a=[1,2]", "b='x,y'", 'c="p,q"']) == [["a=[1,2]", "b='x,y'", 'c="p,q"']]
    assert parse_sweep([]) == [[]]
    assert parse_sweep(["a=1"]) == [["a=1"]]
    with pytest.raises(ConfigError, match="empty value"):
        parse_sweep(["a=1,,2"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_sweep(["a"])


@pytest.mark.parametrize("value", ["a\nb", "a\tb", "a\0b", "a\rb", "a\x1bb"])
def test_override_with_a_control_character_is_refused_naming_the_key(value):
    from frugalcv.workflows.pipeline.overrides import apply_override

    data = {"name": "x", "stages": [{"name": "s", "uses": "shard", "params": {"src": "a"}}]}
    with pytest.raises(ConfigError) as exc:
        apply_override(data, f"stages.s.params.src={value}")
    assert "'stages.s.params.src'" in str(exc.value) and repr(value[1]) in str(exc.value)
    assert data["stages"][0]["params"]["src"] == "a"
