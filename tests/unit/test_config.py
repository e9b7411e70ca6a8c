"""Pipeline files: shipped files load; every kind of mistake gives a message that names it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from frugalcv.errors import ConfigError
from frugalcv.workflows.pipeline.config import DeepSpeedConfig, config_hash, load_pipeline, pipeline_from_dict

PIPELINES = sorted((Path(__file__).parents[2] / "pipelines").glob("*.yaml"))

MINIMAL = """
name: tiny
stages:
  - name: pretrain
    uses: blockdrop.pretrain
    inputs: {train: data/train, val: data/val}
    params: {epochs: 1, lr: 1e-4, warmup_epochs: 0}
  - name: curriculum
    uses: blockdrop.curriculum
    inputs: {checkpoint: "${stages.pretrain.outputs.checkpoint}", train: data/train}
    params: {gamma: 5.0}
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str, overrides=()) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, list(overrides))
    message = str(info.value)
    assert str(path) in message
    return message


class Has(dict):
    """``Has(d) >= {...}``: d holds every expected key with the expected value."""

    def __ge__(self, expected):
        return all(k in self and self[k] == v for k, v in expected.items())


def test_shipped_pipelines_exist():
    names = {p.name for p in PIPELINES}
    assert {"blockdrop-demo.yaml", "blockdrop-cifar10-resnet110.yaml", "blockdrop-cifar100-resnet110.yaml",
            "blockdrop-imagenet-resnet101.yaml"} <= names


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipeline_loads_and_round_trips(path):
    cfg = load_pipeline(path)
    assert cfg.name == path.stem
    first = cfg.stages[0]  # every pipeline starts from data in its on-disk layout
    assert first.uses in ("shard", "video.extract", "scn.mine")
    again = pipeline_from_dict(cfg.to_dict())
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)


def test_paper_recipes_carry_the_papers_hyper_parameters():
    def params(name, stage):
        return Has(load_pipeline(Path(PIPELINES[0]).parent / f"{name}.yaml").stage(stage).params)

    for name in ("blockdrop-cifar10-resnet110", "blockdrop-cifar100-resnet110"):
        assert params(name, "pretrain") >= {"model": "cifar_resnet110", "lr": 0.1, "momentum": 0.9,
                                                "weight_decay": 1e-4, "epochs": 160, "batch_size": 128}
        assert params(name, "curriculum") >= {"policy": "policy_resnet8_cifar", "lr": 1e-4, "batch_size": 2048,
                                                  "alpha": 0.8, "gamma": 10.0, "entropy_weight": 0.1}
        assert params(name, "finetune") >= {"lr": 1e-4, "batch_size": 256, "epochs": 2000, "gamma": 10.0}
    imagenet = "blockdrop-imagenet-resnet101"
    assert params(imagenet, "pretrain")["model"] == "imagenet_resnet101"
    assert params(imagenet, "pretrain")["weights"].endswith(".pth")
    assert params(imagenet, "curriculum") >= {"policy": "policy_resnet10_imagenet", "epochs": 45,
                                                  "gamma": 5.0, "alpha": 0.8, "lr": 1e-4}
    assert params(imagenet, "finetune") >= {"lr": 1e-5, "batch_size": 320, "epochs": 10, "gamma": 5.0}


def test_demo_resolves_root_tracking_and_interpolation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_pipeline(next(p for p in PIPELINES if p.name == "blockdrop-demo.yaml"))
    root = str(tmp_path / "frugalcv-runs")
    assert cfg.storage.root == root
    assert cfg.tracking.uri == f"sqlite:///{root}/mlflow.db"
    assert cfg.executor.kind == "inline"
    assert cfg.stage("digits").params["dst"] == f"{root}/data/digits"
    assert cfg.stage("curriculum").references()["checkpoint"] == ("pretrain", "checkpoint")
    assert {"epochs", "lr", "batch_size", "gamma", "alpha", "entropy_weight"} <= set(cfg.stage("curriculum").params)


def test_minimal_defaults_and_yaml_floats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_pipeline(write(tmp_path, MINIMAL))
    assert cfg.stage("pretrain").params["lr"] == 1e-4  # plain YAML 1.1 would read the string '1e-4'
    assert cfg.stage("pretrain").inputs["train"] == str(tmp_path / "data" / "train")
    assert cfg.tracking.experiment == "tiny"
    assert cfg.executor.slurm.signal_delay_s == 120
    assert cfg.stage_resources("pretrain") == cfg.executor.slurm


def test_relative_sqlite_uri_is_pinned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_pipeline(write(tmp_path, MINIMAL + "tracking: {uri: sqlite:///runs/m.db}\n"))
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/runs/m.db"


def test_remote_root_needs_a_tracking_uri(tmp_path):
    message = error_of(tmp_path, MINIMAL + "storage: {root: s3://bucket/x}\n")
    assert "tracking.uri" in message and "s3://bucket/x" in message
    cfg = load_pipeline(write(tmp_path, MINIMAL + "storage: {root: s3://bucket/x}\ntracking: {uri: http://h:5000}\n"))
    assert cfg.storage.root == "s3://bucket/x" and not cfg.storage.is_local


def test_stage_resources_override_executor_slurm(tmp_path):
    text = MINIMAL.replace("params: {gamma: 5.0}", "params: {gamma: 5.0}\n    resources: {nodes: 2, gpus_per_node: 4}")
    cfg = load_pipeline(write(tmp_path, text))
    r = cfg.stage_resources("curriculum")
    assert (r.nodes, r.gpus_per_node, r.cpus_per_task) == (2, 4, 2)
    assert cfg.stage_resources("pretrain").nodes == 1


def test_deepspeed_engine(tmp_path):
    text = MINIMAL.replace("params: {gamma: 5.0}", "params: {gamma: 5.0}\n    engine: deepspeed\n"
                           "    deepspeed: {zero_stage: 2, offload_optimizer: true}")
    cfg = load_pipeline(write(tmp_path, text))
    assert cfg.stage("curriculum").deepspeed == DeepSpeedConfig(zero_stage=2, offload_optimizer=True)
    assert load_pipeline(write(tmp_path, MINIMAL), ["stages.pretrain.engine=deepspeed"]).stage(
        "pretrain").deepspeed == DeepSpeedConfig()


def test_config_hash_is_stable_and_sensitive():
    a = {"b": 1, "a": [1, 2]}
    assert config_hash(a) == config_hash({"a": [1, 2], "b": 1})
    assert config_hash(a) != config_hash({"b": 2, "a": [1, 2]})
    assert len(config_hash(a)) == 64


# ----------------------------------------------------------------------------------- errors


def test_malformed_yaml_names_file_and_line(tmp_path):
    message = error_of(tmp_path, "name: x\nstages:\n  - name: a\n    uses: [unclosed\n")
    assert "malformed YAML" in message and "line 5" in message


def test_duplicate_yaml_key_names_both_lines(tmp_path):
    message = error_of(tmp_path, "name: x\nname: y\nstages: []\n")
    assert "duplicate key 'name'" in message and "line 2" in message and "first on line 1" in message


def test_empty_file_and_non_mapping(tmp_path):
    assert "empty" in error_of(tmp_path, "")
    assert "top level must be a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_pipeline("nope.yaml")


def test_unknown_top_level_key_suggests_and_lists(tmp_path):
    message = error_of(tmp_path, MINIMAL + "executr: {kind: slurm}\n")
    assert "executr: unknown key 'executr'; did you mean 'executor'?" in message
    assert "Allowed keys: description, executor, name, smoke_steps, stages, storage, tracking" in message


def test_unknown_nested_key(tmp_path):
    message = error_of(tmp_path, MINIMAL + "executor: {slurm: {node: 2}}\n")
    assert "executor.slurm.node: unknown key 'node'; did you mean 'nodes'?" in message
    assert "tasks_per_node" in message


def test_unknown_stage_key_uses_stage_name_in_path(tmp_path):
    message = error_of(tmp_path, MINIMAL.replace("params: {gamma: 5.0}", "parms: {gamma: 5.0}"))
    assert "stages.curriculum.parms: unknown key 'parms'; did you mean 'params'?" in message


def test_unknown_resources_key(tmp_path):
    message = error_of(tmp_path, MINIMAL.replace("params: {gamma: 5.0}", "resources: {gpu_per_node: 1}"))
    assert "stages.curriculum.resources.gpu_per_node" in message and "did you mean 'gpus_per_node'?" in message


def test_bad_executor_kind(tmp_path):
    message = error_of(tmp_path, MINIMAL + "executor: {kind: slurmm}\n")
    assert "executor.kind: 'slurmm' is not allowed; use one of 'inline', 'local', 'slurm'" in message
    assert "did you mean 'slurm'?" in message


@pytest.mark.parametrize("snippet, path, expected", [
    ("executor: {slurm: {nodes: two}}", "executor.slurm.nodes", "'two' is not an integer"),
    ("executor: {slurm: {nodes: true}}", "executor.slurm.nodes", "True is not an integer"),
    ("executor: {slurm: {nodes: 0}}", "executor.slurm.nodes", "must be >= 1"),
    ("executor: {slurm: {mem_gb: -1}}", "executor.slurm.mem_gb", "must be > 0"),
    ("executor: {slurm: {timeout_min: 1, signal_delay_s: 120}}", "executor.slurm.signal_delay_s", "shorter"),
    ("executor: {slurm: {setup: module load x}}", "executor.slurm.setup", "is not a list of a string"),
    ("executor: {slurm: {partition: \"a\\nb\"}}", "executor.slurm.partition", "newlines"),
    ("executor: {slurm: {additional: {time: 5}}}", "executor.slurm.additional.time", "set by frugalcv"),
    ("executor: {slurm: {additional: {exclusive: false}}}", "executor.slurm.additional.exclusive", "remove"),
    ("executor: []", "executor", "is not a mapping with keys kind, slurm"),
    ("storage: {root: 5}", "storage.root", "5 is not a string"),
    ("name: Bad Name", "name", "'Bad Name'"),
])
def test_bad_values_name_path_value_and_rule(tmp_path, snippet, path, expected):
    text = MINIMAL.replace("name: tiny\n", "") if snippet.startswith("name:") else MINIMAL
    message = error_of(tmp_path, text + snippet + "\n")
    assert f": {path}: " in message and expected in message


def test_bad_stage_values(tmp_path):
    assert "stages.curriculum.params: 5 is not a mapping" in error_of(
        tmp_path, MINIMAL.replace("params: {gamma: 5.0}", "params: 5"))
    assert "stages[1].name: 'Curr iculum'" in error_of(tmp_path, MINIMAL.replace("name: curriculum", "name: Curr iculum"))
    assert "stages.curriculum.engine: 'fsdp' is not allowed; use one of 'ddp', 'deepspeed'" in error_of(
        tmp_path, MINIMAL.replace("params: {gamma: 5.0}", "engine: fsdp"))
    assert "stages.curriculum.deepspeed.zero_stage: 4 is not allowed" in error_of(
        tmp_path, MINIMAL.replace("params: {gamma: 5.0}", "engine: deepspeed\n    deepspeed: {zero_stage: 4}"))
    assert "set engine: deepspeed" in error_of(
        tmp_path, MINIMAL.replace("params: {gamma: 5.0}", "deepspeed: {zero_stage: 1}"))
    assert "stages: a pipeline needs at least one stage" in error_of(tmp_path, "name: x\nstages: []\n")


def test_duplicate_stage_name(tmp_path):
    message = error_of(tmp_path, MINIMAL.replace("name: curriculum", "name: pretrain"))
    assert "stages.pretrain.name: 'pretrain': duplicate stage name" in message


def test_forward_and_unknown_references(tmp_path):
    forward = MINIMAL.replace("inputs: {train: data/train, val: data/val}",
                              "inputs: {train: \"${stages.curriculum.outputs.checkpoint}\", val: data/val}")
    message = error_of(tmp_path, forward)
    assert "stages.pretrain.inputs.train" in message and "'curriculum' is a later stage" in message
    unknown = MINIMAL.replace("stages.pretrain.outputs", "stages.pretrian.outputs")
    message = error_of(tmp_path, unknown)
    assert "'pretrian' is no such stage (earlier stages: pretrain)" in message
    embedded = MINIMAL.replace('"${stages.pretrain.outputs.checkpoint}"', '"${stages.pretrain.outputs.checkpoint}/x"')
    assert "a reference is a whole value" in error_of(tmp_path, embedded)


def test_unknown_placeholder(tmp_path):
    message = error_of(tmp_path, MINIMAL.replace("data/train", '"${storage.rot}/train"'))
    assert "stages.pretrain.inputs.train" in message and "unknown placeholder ${storage.rot}" in message
    assert "${storage.root}" in message


def test_unregistered_stage_function(tmp_path):
    from frugalcv.workflows.pipeline.config import check_stage_functions

    path = write(tmp_path, MINIMAL.replace("uses: blockdrop.curriculum", "uses: blockdrop.curriculm"))
    with pytest.raises(ConfigError, match=r"p.yaml, line 9: stages.curriculum.uses: 'blockdrop.curriculm' is not a "
                       r"registered stage function; did you mean 'blockdrop.curriculum'\?"):
        load_pipeline(path)  # checked when the file loads
    cfg = load_pipeline(path, validate=False)
    check_stage_functions(cfg, ["blockdrop.pretrain", "blockdrop.curriculm"])
    with pytest.raises(ConfigError) as info:
        check_stage_functions(cfg, ["blockdrop.pretrain", "blockdrop.curriculum"], source="p.yaml")
    assert "p.yaml: stages.curriculum.uses: 'blockdrop.curriculm' is not a registered stage function; " \
           "did you mean 'blockdrop.curriculum'? Registered: blockdrop.curriculum, blockdrop.pretrain" in str(info.value)


def test_validation_errors_name_the_line(tmp_path):
    # MINIMAL: line 8 is "- name: curriculum", line 11 its params
    message = error_of(tmp_path, MINIMAL.replace("params: {gamma: 5.0}", "parms: {gamma: 5.0}"))
    assert "p.yaml, line 11: stages.curriculum.parms" in message
    assert "p.yaml, line 8: stages.pretrain.name: 'pretrain': duplicate" in error_of(
        tmp_path, MINIMAL.replace("name: curriculum", "name: pretrain"))
    message = error_of(tmp_path, MINIMAL + "executor:\n  kind: inline\n  slurm:\n    nodes: 0\n")
    assert "p.yaml, line 15: executor.slurm.nodes: 0: must be >= 1" in message


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_to_dict_written_as_yaml_loads_back_equal(path, tmp_path):
    import yaml

    trained = next(s.name for s in load_pipeline(path).stages if s.uses != "shard")
    cfg = load_pipeline(path, [f"stages.{trained}.engine=deepspeed"])
    again = load_pipeline(write(tmp_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False), "again.yaml"))
    assert again == cfg and config_hash(again) == config_hash(cfg)


def test_configs_built_in_python_validate_too():
    from frugalcv.workflows.pipeline.config import PipelineConfig, SlurmConfig, StageConfig

    with pytest.raises(ConfigError, match="nodes: 0: must be >= 1"):
        SlurmConfig(nodes=0)
    with pytest.raises(ConfigError, match="stages.b.inputs.x: .*'c' is no such stage"):
        PipelineConfig(name="p", stages=[StageConfig(name="a", uses="shard"),
                                         StageConfig(name="b", uses="shard", inputs={"x": "${stages.c.outputs.y}"})])
