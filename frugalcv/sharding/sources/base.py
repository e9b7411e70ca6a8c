"""The interface every dataset converter ("source") implements, and the kind registry.

A source reads one split of a dataset in its real on-disk format and encodes sample
``i`` into WebDataset fields. Field conventions (the reader decodes these):

- ``png`` / ``jpg``: the RGB image (original bytes kept where the input is already PNG/JPEG)
- ``cls``: the class index as ASCII digits
- ``mask.png``: single-channel (mode "L") PNG of train ids, 255 = ignore
- ``features.npy``: ``np.save`` of a float32 [T, D] array (no pickle)
- ``coarse.npy``: ``np.save`` of a float32 [T, D_coarse] array: the same frames' features from a
  cheaper network (coarse-to-fine video methods)
- ``frames.npy``: ``np.save`` of a uint8 [T, H, W, 3] array of RGB frames (no pickle)
- ``informative.npy``: ``np.save`` of a uint8 [T] array, 1 where a frame shows the class
  (for analysis of generated videos; training must not read it)
- ``labels.npy``: ``np.save`` of a uint8 [C] multi-hot array (image-level labels, e.g. VOC)
- ``a.png`` / ``b.png`` / ``offset.npy`` / ``a.cls`` / ``b.cls`` / ``pair.json``: a patch pair
  (task ``patch_pairs``): patches X_i and X_j, ``np.save`` of float32 [8] corner offsets
  (x over the image width, y over its height), their classes when known, and the image id, size
  and both boxes in pixels

Sources must be picklable (the writer encodes in a process pool) and ``encode`` must be
deterministic, so that the same input gives byte-identical shards.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import ClassVar

from frugalcv.errors import FrugalError, SourceLayoutError

TASKS = ("classification", "segmentation", "video_features", "video_frames", "patch_pairs")


@dataclass(frozen=True)
class EncodedSample:
    """One sample ready to be written: a key without dots or slashes, and ext -> bytes."""

    key: str
    fields: dict[str, bytes] = field(default_factory=dict)


_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]")


def safe_key(text: str) -> str:
    """Make a WebDataset key: WebDataset splits a member name at its first dot."""
    return _KEY_BAD.sub("_", text)


class Source(abc.ABC):
    """One split of a dataset in its on-disk format."""

    kind: ClassVar[str]
    task: ClassVar[str]
    #: the split names this kind knows, the first being the default
    splits: ClassVar[tuple[str, ...]]

    def __init__(self, root: str, split: str):
        if split not in self.splits:
            raise FrugalError(
                f"{self.kind}: unknown split {split!r}; this kind has: {', '.join(self.splits)}"
            )
        self.root = root
        self.split = split

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def class_names(self) -> list[str]: ...

    @abc.abstractmethod
    def schema(self) -> dict[str, str]:
        """Field extension -> description, e.g. {"png": "RGB image", "cls": "class index"}."""

    @abc.abstractmethod
    def encode(self, index: int) -> EncodedSample: ...

    def extra_manifest(self) -> dict:
        """Kind-specific facts recorded in the manifest (e.g. SYNTHIA's 16 classes present)."""
        return {}

    def writer_params(self) -> dict:
        """Settings beyond kind, split and shard limits that change the shards (a derived dataset's
        input and settings), as plain JSON data: a rerun into the same folder with others is refused."""
        return {}


SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    assert cls.task in TASKS, cls.task
    SOURCES[cls.kind] = cls
    return cls


def source_class(kind: str) -> type[Source]:
    """The Source class registered for ``kind``; an unknown kind lists the known ones."""
    import frugalcv.sharding.sources  # noqa: F401  (its __init__ imports, and so registers, every kind)

    if kind not in SOURCES:
        raise FrugalError(f"unknown dataset kind {kind!r}; known kinds: {', '.join(sorted(SOURCES))}")
    return SOURCES[kind]


def get_source(kind: str, root: str, split: str, **options) -> Source:
    """The ``split`` of dataset ``kind`` at ``root``; ``options`` go to kinds that take some (``voc-pairs``)."""
    return source_class(kind)(root, split, **options)


def require_file(path: str, what: str, kind: str) -> None:
    """Raise SourceLayoutError naming ``path`` when it is missing."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        raise SourceLayoutError(f"{kind}: expected {what} at {path!r}, but it does not exist")
