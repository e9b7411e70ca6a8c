"""The frames a video stage reads: a ``video_frames`` shard split, or a folder of frame images per video.

Either way a stage sees the same thing: the split's length, class names and frames per video
(when the input knows it), and ``videos(first)``, the videos from index ``first`` on, decoded one
at a time (a split is never held in memory).
"""

from __future__ import annotations

import abc
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage
from frugalcv.sharding.decode import decode_sample
from frugalcv.sharding.manifest import MANIFEST_NAME, load_manifest
from frugalcv.sharding.reader import iter_shard
from frugalcv.sharding.sources.video_frames import SPLITS, VideoFramesSource, has_split_folders

LAYOUTS = ("a video_frames shard split (e.g. `frugalcv shard video-digits sklearn DST`, then DST/val) or a "
           "folder <class>/<video>/<frame>.jpg|png")


@dataclass(frozen=True)
class Video:
    key: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    label: int
    informative: np.ndarray | None = None  # uint8 [T] marks, where the input has them


class FrameSplit(abc.ABC):
    """One split of videos as frames."""

    url: str
    split: str
    classes: list[str]
    #: frames of every video, where the input records one count for all; else None
    frames_per_video: int | None = None
    has_informative: bool = False

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def identity(self) -> dict:
        """What identifies the input's content (a rerun on other frames must not reuse shards)."""

    @abc.abstractmethod
    def videos(self, first: int = 0) -> Iterator[Video]: ...


class ShardFrames(FrameSplit):
    """A ``video_frames`` shard split, streamed from the shard that holds video ``first``."""

    def __init__(self, url: str):
        self.url = url
        self.manifest = load_manifest(url)
        m = self.manifest
        if m.task != "video_frames":
            raise ConfigError(f"{storage.redact(url)}: holds {m.kind} shards of task {m.task!r}; expected "
                              f"{LAYOUTS}")
        self.split, self.classes = m.split, list(m.classes)
        frames = m.extra.get("frames")
        self.frames_per_video = frames if isinstance(frames, int) and not isinstance(frames, bool) else None
        self.has_informative = "informative.npy" in m.schema

    def __len__(self) -> int:
        return self.manifest.num_samples

    def identity(self) -> dict:
        return {"kind": self.manifest.kind, "split": self.split, "manifest_sha256": self.manifest.digest()}

    def videos(self, first: int = 0) -> Iterator[Video]:
        m = self.manifest
        for k, info in enumerate(m.shards):
            if info.first + info.samples <= first:
                continue
            shown = storage.redact(m.shard_url(k))
            for position, raw in enumerate(iter_shard(m, k, decode=False), start=info.first):
                if position < first:
                    continue
                sample = decode_sample(raw["key"], raw["fields"], shown)
                if "frames" not in sample or "label" not in sample:
                    raise ConfigError(f"{shown}: sample {raw['key']} has no frames.npy and cls; expected {LAYOUTS}")
                yield Video(raw["key"], sample["frames"], sample["label"], sample.get("informative"))


class FolderFrames(FrameSplit):
    """A ``video-frames`` folder (see ``frugalcv.sharding.sources.video_frames``), read video by video."""

    def __init__(self, source: VideoFramesSource, url: str):
        self.source, self.url = source, url
        self.split, self.classes = source.split, source.class_names()
        self.frames_per_video = source.extra_manifest()["frames"]

    def __len__(self) -> int:
        return len(self.source)

    def identity(self) -> dict:
        return {"kind": self.source.kind, "split": self.split, "folder": storage.redact(self.url),
                "videos": len(self.source)}

    def videos(self, first: int = 0) -> Iterator[Video]:
        for i in range(first, len(self.source)):
            yield Video(self.source.keys[i], self.source.video(i), self.source.labels[i])


def open_frames(url: str) -> FrameSplit:
    """The videos at ``url``: a shard split (it has a manifest) or a folder of frame folders.

    A folder that holds ``train``/``val``/``test`` folders is refused (name one split); a split
    folder of such a tree (``SRC/val``) takes its class indices from ``SRC/train``."""
    url = url.rstrip("/")
    if storage.exists(storage.join(url, MANIFEST_NAME)):
        return ShardFrames(url)
    if not storage.exists(url):
        raise ConfigError(f"{storage.redact(url)}: does not exist; expected {LAYOUTS}")
    if has_split_folders(url, VideoFramesSource.kind):
        raise ConfigError(f"{storage.redact(url)}: holds split folders ({', '.join(SPLITS)}); point the input "
                          f"at one of them, e.g. {storage.redact(storage.join(url, 'val'))}")
    parent, name = storage.parent(url), posixpath.basename(url)
    if name in SPLITS and parent and has_split_folders(parent, VideoFramesSource.kind):
        return FolderFrames(VideoFramesSource(parent, name), url)
    return FolderFrames(VideoFramesSource(url, "train"), url)
