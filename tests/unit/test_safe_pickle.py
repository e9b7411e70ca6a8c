"""Dataset pickles are untrusted: a crafted CIFAR batch is refused and runs no code."""

import os
import pickle

import numpy as np
import pytest
from dataset_fixtures import make_cifar10

from frugalcv.errors import FrugalError
from frugalcv.sharding import write_shards
from frugalcv.sharding.sources import safe_pickle


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_data_and_arrays_load():
    value = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], "n": 3.5, "s": "x"}
    back = safe_pickle.load(pickle.dumps(value), "batch")
    assert np.array_equal(back[b"data"], value[b"data"]) and back[b"labels"] == [1, 2] and back["s"] == "x"


def test_a_pickle_that_calls_a_function_is_refused_before_the_call(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(FrugalError, match="refers to posix.system|refers to os.system"):
        safe_pickle.load(pickle.dumps({b"data": _RunsCode(marker)}), "x.pkl")
    assert not marker.exists()


def test_a_crafted_cifar_batch_is_refused_naming_the_file(tmp_path):
    root = make_cifar10(tmp_path / "src")
    marker = tmp_path / "ran"
    batch = next(root.rglob("data_batch_1"))
    batch.write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}))
    with pytest.raises(FrugalError, match=r"data_batch_1: refused"):
        write_shards("cifar10", str(root), str(tmp_path / "out"), split="train", progress=False)
    assert not marker.exists()
    assert not (tmp_path / "out" / "train" / "manifest.json").exists()


def test_a_truncated_pickle_names_the_file():
    with pytest.raises(FrugalError, match="b.pkl: not a readable pickle"):
        safe_pickle.load(pickle.dumps({"a": list(range(100))})[:20], "b.pkl")
