"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches, as distributed.

SRC is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) or the folder that
contains it. Each batch is a pickled dict with bytes keys: ``b"data"`` (uint8 [N, 3072], the
R, G and B 32x32 planes of each image in row-major order) and ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` (CIFAR-100; the 20 coarse labels are not used). Images are written as PNG,
keys are ``{split}_{index:05d}`` in batch order.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np

from frugalcv.errors import FrugalError

from . import safe_pickle
from ._common import exists, join, png_bytes, read_bytes
from .base import EncodedSample, Source, register_source, require_file


@functools.lru_cache(maxsize=8)
def _load_pickle(url: str) -> dict:
    # The batches are pickles: read as untrusted input (plain data and numpy arrays only, see
    # safe_pickle). Cached so a worker unpickles each batch once, not once per image.
    batch = safe_pickle.load(read_bytes(url), url, encoding="bytes")
    if not isinstance(batch, dict):
        raise FrugalError(f"{url}: a CIFAR batch is a dict, this pickle holds a {type(batch).__name__}")
    return batch


class _CifarSource(Source):
    task = "classification"
    splits = ("train", "test")
    folder: ClassVar[str]
    batches: ClassVar[dict[str, tuple[str, ...]]]
    meta_file: ClassVar[str]
    names_key: ClassVar[bytes]
    labels_key: ClassVar[bytes]

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        nested = join(root, self.folder)
        self.folder_url = nested if exists(nested) else root
        self.meta_url = join(self.folder_url, self.meta_file)
        self.batch_urls = [join(self.folder_url, name) for name in self.batches[split]]
        for url in [self.meta_url, *self.batch_urls]:
            require_file(
                url, f"a {self.kind} pickle (SRC may also be the folder holding {self.folder}/)", self.kind
            )
        self.batch_sizes = [self._check_batch(url) for url in self.batch_urls]
        self._names = [n.decode("ascii") for n in _load_pickle(self.meta_url)[self.names_key]]

    def _check_batch(self, url: str) -> int:
        batch = _load_pickle(url)
        if b"data" not in batch or self.labels_key not in batch:
            raise FrugalError(f"{self.kind}: {url!r} has no {self.labels_key!r} or b'data' entry")
        data, labels = batch[b"data"], batch[self.labels_key]
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
            raise FrugalError(
                f"{self.kind}: {url!r} holds data of shape {data.shape} and {len(labels)} labels; "
                "expected [N, 3072] and N labels"
            )
        return int(data.shape[0])

    def __len__(self) -> int:
        return sum(self.batch_sizes)

    def class_names(self) -> list[str]:
        return list(self._names)

    def schema(self) -> dict[str, str]:
        return {"png": "RGB image, 32x32", "cls": f"class index into the {len(self._names)} classes"}

    def encode(self, index: int) -> EncodedSample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        batch_index, offset = 0, index
        while offset >= self.batch_sizes[batch_index]:
            offset -= self.batch_sizes[batch_index]
            batch_index += 1
        batch = _load_pickle(self.batch_urls[batch_index])
        image_HWC = np.asarray(batch[b"data"][offset], dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
        label = int(batch[self.labels_key][offset])
        return EncodedSample(
            key=f"{self.split}_{index:05d}",
            fields={"png": png_bytes(np.ascontiguousarray(image_HWC)), "cls": str(label).encode("ascii")},
        )


@register_source
class Cifar10Source(_CifarSource):
    kind = "cifar10"
    folder = "cifar-10-batches-py"
    batches = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
    meta_file = "batches.meta"
    names_key = b"label_names"
    labels_key = b"labels"


@register_source
class Cifar100Source(_CifarSource):
    kind = "cifar100"
    folder = "cifar-100-python"
    batches = {"train": ("train",), "test": ("test",)}
    meta_file = "meta"
    names_key = b"fine_label_names"
    labels_key = b"fine_labels"
