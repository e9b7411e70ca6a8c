"""Quoting of values that reach sbatch scripts; executor parameters from plain dicts."""

import subprocess

import pytest
import submitit
from submitit.slurm.slurm import _make_sbatch_string

from frugalcv.errors import ConfigError
from frugalcv.slurm.sbatch import (
    ALLOWED,
    auto_executor_parameters,
    check_job_folder,
    export_line,
    make_executor,
    quote,
    slurm_executor_parameters,
)

NASTY = [
    "plain",
    "with space",
    "it's",
    'say "hi"',
    "new\nline",
    "$HOME `id` $(id) ;|&<>*?",
    "tab\there",
    "",
    "-dash",
    "ünï",
]


@pytest.mark.parametrize("value", NASTY)
def test_quote_survives_bash(value):
    out = subprocess.run(
        ["bash", "-c", f"printf %s {quote(value)}"], capture_output=True, text=True, check=True
    ).stdout
    assert out == value


@pytest.mark.parametrize("value", NASTY)
def test_export_line_survives_bash(value):
    out = subprocess.run(
        ["bash", "-c", f'{export_line("FRUGAL_X", value)}\nprintf %s "$FRUGAL_X"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == value


def test_quote_paths(odd_tmp):
    out = subprocess.run(
        ["bash", "-c", f"printf %s {quote(odd_tmp)}"], capture_output=True, text=True, check=True
    ).stdout
    assert out == str(odd_tmp)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="NUL"):
        quote("a\0b")
    with pytest.raises(ConfigError, match="not a valid environment variable name"):
        export_line("1X", "v")


def test_job_folder_may_have_spaces_and_quotes_but_no_newline(odd_tmp):
    assert check_job_folder(odd_tmp) == odd_tmp
    with pytest.raises(ConfigError, match="newline"):
        check_job_folder(odd_tmp / "a\nb")


FULL = {
    "nodes": 2,
    "tasks_per_node": 4,
    "cpus_per_task": 8,
    "gpus_per_node": 4,
    "mem_gb": 64,
    "timeout_min": 120,
    "partition": "gpu",
    "account": "vision",
    "qos": "high",
    "constraint": "a100",
    "additional": {"exclusive": True, "mail-type": "END"},
    "setup": ["module load cuda", export_line("DATA", "/data/with space")],
    "job_name": "blockdrop-finetune",
}


def test_auto_executor_parameters():
    assert auto_executor_parameters(FULL) == {
        "nodes": 2,
        "tasks_per_node": 4,
        "cpus_per_task": 8,
        "gpus_per_node": 4,
        "mem_gb": 64,
        "timeout_min": 120,
        "slurm_partition": "gpu",
        "slurm_account": "vision",
        "slurm_qos": "high",
        "slurm_constraint": "a100",
        "slurm_additional_parameters": {"exclusive": True, "mail-type": "END"},
        "slurm_setup": ["module load cuda", "export DATA='/data/with space'"],
        "name": "blockdrop-finetune",
    }


def test_every_key_reaches_the_sbatch_script(odd_tmp):
    params = slurm_executor_parameters({**FULL, "mem_gb": 1.5})
    assert params["mem"] == "1536MB" and params["ntasks_per_node"] == 4 and params["time"] == 120
    script = _make_sbatch_string(command="python -u run.py", folder=odd_tmp / "%j", **params)
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --mem=1536MB",
        "#SBATCH --time=120",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=vision",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --exclusive",
        "#SBATCH --mail-type=END",
        "#SBATCH --job-name=blockdrop-finetune",
        "export DATA='/data/with space'",
    ):
        assert line in script.splitlines(), line


def test_submitit_accepts_the_parameters(tmp_path):
    ex = make_executor(tmp_path / "jobs", FULL, cluster="debug")
    assert isinstance(ex, submitit.AutoExecutor)
    # the same names on a Slurm executor (submitit validates them against sbatch's)
    sx = submitit.SlurmExecutor(folder=tmp_path / "jobs2")
    sx.update_parameters(**slurm_executor_parameters(FULL))
    assert sx.parameters["ntasks_per_node"] == 4


def test_unknown_key_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as e:
        auto_executor_parameters({"nodes": 1, "gpus": 2, "walltime": 3})
    msg = str(e.value)
    assert "gpus, walltime" in msg
    assert all(k in msg for k in ALLOWED)


@pytest.mark.parametrize(
    "key,value",
    [
        ("nodes", 0),
        ("nodes", "2"),
        ("nodes", True),
        ("gpus_per_node", -1),
        ("mem_gb", 0),
        ("timeout_min", 1.5),
        ("partition", ""),
        ("partition", "a\nb"),
        ("additional", {"bad flag": 1}),
        ("additional", {"x": "a\n#SBATCH --evil"}),
        ("setup", "module load cuda"),
    ],
)
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"slurm.{key}="):
        auto_executor_parameters({key: value})


def test_none_and_zero_gpus_are_dropped():
    assert auto_executor_parameters({"nodes": 1, "gpus_per_node": 0, "account": None}) == {"nodes": 1}
