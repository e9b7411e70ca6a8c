"""A corpus of bad inputs through the real ``frugalcv`` command: each exits non-zero with one message
that names what is at fault, and never with a traceback."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import synthetic  # noqa: F401  (registers the synthetic-test kind used to build the shard fixtures)
import torch
import yaml
from PIL import Image

from frugalcv.sharding import write_shards

pytestmark = pytest.mark.integration

GOOD_STAGE = {"name": "digits", "uses": "shard", "params": {"kind": "digits", "src": "sklearn"}}


class _Code:
    """Unpickling this runs code: what a malicious checkpoint holds."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _pipeline(folder: Path, name: str, data: object) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _stages(*stages: dict, **top) -> dict:
    return {"name": "bad", **top, "stages": list(stages)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Files every case reads: a small shard dataset and its broken copies, broken checkpoints and sources."""
    d = tmp_path_factory.mktemp("corpus with space")
    write_shards("synthetic-test", "24", str(d / "shards"), split="train", max_shard_samples=8, progress=False)
    good = d / "shards" / "train"
    for name in ("truncated", "badjson", "badfields", "nomanifest"):
        os.system(f"cp -r '{good}' '{d / name}'")
    tar = sorted((d / "truncated").glob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:700])
    (d / "badjson" / "manifest.json").write_text('{"format_version": 1, "shards": [')
    manifest = json.loads((d / "badfields" / "manifest.json").read_text())
    manifest["shards"][0]["num_samples"] = "eight"
    (d / "badfields" / "manifest.json").write_text(json.dumps(manifest))
    (d / "nomanifest" / "manifest.json").unlink()
    buf = io.BytesIO()
    torch.save({"format": 1, "model": {}}, buf)
    (d / "truncated.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "code.pt").write_bytes(pickle.dumps(_Code()))
    for split in ("train",):
        (d / "images" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(d / "images" / split / "cat" / "ok.jpg")
        (d / "images" / split / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def _curriculum(d: Path, checkpoint: str) -> dict:
    return _stages({"name": "curriculum", "uses": "blockdrop.curriculum",
                    "inputs": {"checkpoint": str(d / checkpoint), "train": str(d / "shards" / "train")},
                    "params": {"policy": "policy_resnet8_cifar", "epochs": 1, "batch_size": 8}},
                   storage={"root": str(d / f"root-{checkpoint}")})


Case = tuple[str, Callable[[Path], list[str]], Callable[[Path], list[str]]]
P = _pipeline
CASES: list[Case] = [
    # ---- pipeline files
    ("yaml-malformed", lambda d: ["run", P(d, "m", "name: [bad\nstages: x\n"), "--dry-run"],
     lambda d: ["m.yaml", "line", "malformed YAML"]),
    ("yaml-empty", lambda d: ["run", P(d, "e", ""), "--dry-run"], lambda d: ["e.yaml", "empty"]),
    ("yaml-list", lambda d: ["run", P(d, "l", "- a\n- b\n"), "--dry-run"], lambda d: ["l.yaml", "top level"]),
    ("yaml-duplicate-key", lambda d: ["run", P(d, "dup", "name: a\nname: b\nstages: []\n"), "--dry-run"],
     lambda d: ["dup.yaml", "duplicate key 'name'"]),
    ("unknown-top-key", lambda d: ["run", P(d, "k", _stages(GOOD_STAGE, stagse=1)), "--dry-run"],
     lambda d: ["k.yaml", "stagse"]),
    ("unknown-stage-key", lambda d: ["run", P(d, "sk", _stages({**GOOD_STAGE, "parms": {}})), "--dry-run"],
     lambda d: ["sk.yaml", "stages.digits.parms"]),
    ("wrong-type-epochs", lambda d: ["run", P(d, "ep", _curriculum(d, "truncated.pt") | {"stages": [
        {**_curriculum(d, "x")["stages"][0], "params": {"policy": "policy_resnet8_cifar", "epochs": "ten"}}]}),
        "--dry-run"], lambda d: ["ep.yaml", "stages.curriculum.params.epochs", "'ten'"]),
    ("bad-reference", lambda d: ["run", P(d, "ref", _stages(GOOD_STAGE, {
        "name": "pretrain", "uses": "blockdrop.pretrain", "inputs": {"train": "${stages.digits.outputs.trian}",
                                                          "val": "${stages.digits.outputs.test}"},
        "params": {"model": "cifar_resnet32"}})), "--dry-run"], lambda d: ["ref.yaml", "trian"]),
    ("later-reference", lambda d: ["run", P(d, "later", _stages(
        {**GOOD_STAGE, "name": "a", "inputs": {"x": "${stages.b.outputs.train}"}}, {**GOOD_STAGE, "name": "b"})),
        "--dry-run"], lambda d: ["later.yaml", "stages.a.inputs.x", "later stage"]),
    ("unknown-stage-function", lambda d: ["run", P(d, "uses", _stages({**GOOD_STAGE, "uses": "shardd"})),
                                          "--dry-run"], lambda d: ["uses.yaml", "shardd"]),
    ("unknown-placeholder", lambda d: ["run", P(d, "ph", _stages(
        {**GOOD_STAGE, "params": {**GOOD_STAGE["params"], "dst": "${nope}/x"}})), "--dry-run"],
     lambda d: ["ph.yaml", "${nope}"]),
    ("bad-stage-name", lambda d: ["run", P(d, "sn", _stages({**GOOD_STAGE, "name": "Bad Name"})), "--dry-run"],
     lambda d: ["sn.yaml", "Bad Name"]),
    ("no-stages", lambda d: ["run", P(d, "ns", {"name": "x", "stages": []}), "--dry-run"],
     lambda d: ["ns.yaml", "stages"]),
    ("checkpoint-every", lambda d: ["run", P(d, "ce", _stages({**GOOD_STAGE, "checkpoint_every": "soon"})),
                                    "--dry-run"], lambda d: ["ce.yaml", "checkpoint_every", "soon"]),
    ("unknown-shard-kind", lambda d: ["run", P(d, "kind", _stages(
        {**GOOD_STAGE, "params": {"kind": "digitz", "src": "sklearn"}})), "--dry-run"],
     lambda d: ["kind.yaml", "digitz"]),
    ("missing-pipeline-file", lambda d: ["run", str(d / "nope.yaml"), "--dry-run"], lambda d: ["nope.yaml"]),
    ("s3-root-with-slurm", lambda d: ["run", P(d, "s3", _stages(GOOD_STAGE, storage={"root": "s3://b/r"},
                                                             tracking={"uri": "sqlite:////tmp/x.db"})),
                                      "--executor", "slurm", "--dry-run"],
     lambda d: ["s3://b/r", "slurm executor", "shared filesystem"]),
    # ---- command-line arguments
    ("override-newline", lambda d: ["run", P(d, "ok", _stages(GOOD_STAGE)), "-o", "name=a\nb", "--dry-run"],
     lambda d: ["'name'", "control character"]),
    ("override-nul", lambda d: ["run", P(d, "ok", _stages(GOOD_STAGE)), "-o", "stages.digits.src=a\x01b",
                                "--dry-run"], lambda d: ["stages.digits.src", "control character"]),
    ("override-no-equals", lambda d: ["run", P(d, "ok", _stages(GOOD_STAGE)), "-o", "name", "--dry-run"],
     lambda d: ["'name'", "key=value"]),
    ("override-unknown-key", lambda d: ["run", P(d, "ok", _stages(GOOD_STAGE)), "-o", "executor.kindd=local",
                                        "--dry-run"], lambda d: ["executor.kindd"]),
    ("override-unknown-stage", lambda d: ["run", P(d, "ok", _stages(GOOD_STAGE)), "-o", "stages.digitz.src=x",
                                          "--dry-run"], lambda d: ["digitz"]),
    ("bad-size-argument", lambda d: ["shard", "digits", "sklearn", str(d / "o"), "--max-shard-bytes", "12Q"],
     lambda d: ["12Q"]),
    ("unknown-run", lambda d: ["status", "20990101-000000-abcd", "--root", str(d / "shards")],
     lambda d: ["20990101-000000-abcd"]),
    ("unknown-model", lambda d: ["models", "flops", "resnet_nope"], lambda d: ["resnet_nope"]),
    # ---- datasets
    ("source-folder-missing", lambda d: ["shard", "imagefolder", str(d / "no-such-folder"), str(d / "o1")],
     lambda d: ["no-such-folder"]),
    ("corrupt-jpeg", lambda d: ["shard", "imagefolder", str(d / "images"), str(d / "o2"), "--no-progress"],
     lambda d: ["broken.jpg"]),
    ("truncated-tar", lambda d: ["shards", "verify", str(d / "truncated")], lambda d: ["train-000000.tar", "truncated"]),
    # ---- manifests
    ("manifest-bad-json", lambda d: ["shards", "info", str(d / "badjson")], lambda d: ["badjson", "manifest.json"]),
    ("manifest-bad-field", lambda d: ["shards", "info", str(d / "badfields")],
     lambda d: ["badfields", "num_samples"]),
    ("manifest-missing", lambda d: ["shards", "verify", str(d / "nomanifest")],
     lambda d: ["nomanifest", "manifest"]),
    # ---- checkpoints (a real run of a stage that loads one)
    ("checkpoint-truncated", lambda d: ["run", P(d, "ct", _curriculum(d, "truncated.pt")), "--no-track"],
     lambda d: ["truncated.pt"]),
    ("checkpoint-pickled-code", lambda d: ["run", P(d, "cc", _curriculum(d, "code.pt")), "--no-track"],
     lambda d: ["code.pt", "pickled code"]),
]


@pytest.mark.parametrize("name,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_message_and_no_traceback(corpus, name, argv, expected):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "frugalcv.cli", *argv(corpus)], capture_output=True, text=True,
                         timeout=300, env=env, cwd=corpus)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "Traceback" not in out.stderr, out.stderr
    assert "weights_only=False" not in text and "pwned" not in text
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:") or
              (line.startswith("frugalcv ") and ": error:" in line)]  # argparse: "frugalcv shard: error: ..."
    bad = [line for line in out.stdout.splitlines() if line.startswith("BAD ")]
    assert len(errors) + len(bad) == 1 or (not errors and len(bad) >= 1), text
    message = (errors or bad)[0]
    for part in expected(corpus):
        assert part in message, (part, text)
