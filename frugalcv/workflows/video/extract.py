"""Frames -> per-frame feature sequences, written as ``video-features`` shards by the shard writer.

:class:`FeatureSource` is a shard :class:`~frugalcv.sharding.sources.base.Source` whose sample
``i`` is video ``i`` of the input passed through the backbones, so the writer's machinery does
the rest: shard limits, ``_progress/`` records and resuming, array tasks over disjoint shard
ranges (``frugalcv.sharding.tasks``) and the manifest written last.

Videos are read in order and extracted a *chunk* at a time: ``batch_size // T`` consecutive
videos (at least one), their frames batched together through each backbone. Chunks start at
multiples of that count and never cross a multiple of ``max_shard_samples``, so the batches — and
the bytes written — depend only on the settings, not on which task writes which shards or where
a rerun resumes. A sample is ``features.npy`` (float32 [T, D_fine]), ``coarse.npy`` (float32
[T, D_coarse], when a coarse backbone is given), ``cls`` and ``informative.npy`` (passed
through, strided like the frames, when the input has it).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from frugalcv.sharding.sources.base import EncodedSample, Source
from frugalcv.sharding.sources.video_features import VideoFeaturesSource
from frugalcv.workflows.video.backbones import Backbone
from frugalcv.workflows.video.frames import FrameSplit, Video
from frugalcv.workflows.video.params import ExtractParams


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def strided_frames(frames: int | None, stride: int) -> int | None:
    """Frames left of ``frames`` when every ``stride``-th is taken (the first always)."""
    return None if frames is None else -(-frames // stride)


class FeatureSource(Source):
    """The features of every video of ``frames``, as a shard source (encoded in this process only:
    it holds the networks, so ``workers`` must stay 0)."""

    kind = VideoFeaturesSource.kind
    task = VideoFeaturesSource.task
    splits = VideoFeaturesSource.splits

    def __init__(self, frames: FrameSplit, fine: Backbone, coarse: Backbone | None, params: ExtractParams, *,
                 device: torch.device | str = "cpu", precision: str = "fp32", channels_last: bool = False):
        # no Source.__init__: the split is the input's, whatever its name
        self.root, self.split = frames.url, frames.split
        self.frames, self.fine, self.coarse, self.params = frames, fine, coarse, params
        self.device, self.precision, self.channels_last = torch.device(device), precision, channels_last
        self.frames_per_video = strided_frames(frames.frames_per_video, params.fps_stride)
        self.videos_per_chunk = max(1, params.batch_size // (self.frames_per_video or params.batch_size))
        self.frames_extracted = 0
        self._ready: dict[int, EncodedSample] = {}
        self._cursor: tuple[int, Any] | None = None  # (index of the next video, the input's iterator)

    def __len__(self) -> int:
        return len(self.frames)

    def class_names(self) -> list[str]:
        return list(self.frames.classes)

    def schema(self) -> dict[str, str]:
        fine = f"{self.fine.spec.model} at {self.fine.spec.size}"
        out = {"features.npy": f"float32 [T, {self.fine.dim}] per-frame features ({fine}; np.save, no pickle)"}
        if self.coarse is not None:
            coarse = f"{self.coarse.spec.model} at {self.coarse.spec.size}"
            out["coarse.npy"] = f"float32 [T, {self.coarse.dim}] per-frame features ({coarse}; np.save, no pickle)"
        out["cls"] = "class index"
        if self.frames.has_informative:
            out["informative.npy"] = "uint8 [T] 1 where the frame shows the class (analysis only)"
        return out

    def extra_manifest(self) -> dict:
        return {"fine": self.fine.record(), "coarse": self.coarse.record() if self.coarse is not None else None,
                "frames": self.frames_per_video, "fps_stride": self.params.fps_stride}

    def writer_params(self) -> dict:
        p = self.params
        return {"input": self.frames.identity(), "fine": p.fine.record(),
                "coarse": p.coarse.record() if p.coarse is not None else None, "fps_stride": p.fps_stride,
                "batch_size": p.batch_size, "precision": self.precision, "seed": p.seed}

    def chunk(self, index: int) -> tuple[int, int]:
        """[start, end) of the videos extracted together with video ``index``."""
        per = self.videos_per_chunk
        start, end = index - index % per, index - index % per + per
        limit = self.params.max_shard_samples
        if limit is not None:
            shard_start = index - index % limit
            start, end = max(start, shard_start), min(end, shard_start + limit)
        return start, min(end, len(self))

    def encode(self, index: int) -> EncodedSample:
        if index not in self._ready:
            self._ready = self._extract(*self.chunk(index))
        return self._ready.pop(index)

    def _read(self, start: int, end: int) -> list[Video]:
        if self._cursor is None or self._cursor[0] != start:
            self._cursor = (start, self.frames.videos(start))
        videos = [next(self._cursor[1]) for _ in range(end - start)]
        self._cursor = (end, self._cursor[1])
        return videos

    def _extract(self, start: int, end: int) -> dict[int, EncodedSample]:
        stride = self.params.fps_stride
        videos = self._read(start, end)
        frames = [v.frames[::stride] for v in videos]
        run = {"batch_size": self.params.batch_size, "precision": self.precision,
               "channels_last": self.channels_last}
        fine = self.fine.embed(frames, self.device, **run)
        coarse = self.coarse.embed(frames, self.device, **run) if self.coarse is not None else [None] * len(videos)
        self.frames_extracted += sum(len(f) for f in frames)
        out = {}
        for i, (video, f, c) in enumerate(zip(videos, fine, coarse, strict=True)):
            fields = {"features.npy": npy_bytes(f)}
            if c is not None:
                fields["coarse.npy"] = npy_bytes(c)
            fields["cls"] = str(video.label).encode("ascii")
            if video.informative is not None:
                fields["informative.npy"] = npy_bytes(video.informative[::stride])
            out[start + i] = EncodedSample(video.key, fields)
        return out


def feature_source(frames: FrameSplit, params: ExtractParams, *, device: torch.device | str = "cpu",
                   precision: str = "fp32", channels_last: bool = False, load_weights: bool = True) -> FeatureSource:
    """The backbones of ``params`` built on ``device`` (each seeded first, so that random initial
    weights are the same in every task) and the source extracting ``frames`` with them."""
    built = []
    for offset, spec in enumerate((params.fine, params.coarse)):
        if spec is None:
            built.append(None)
            continue
        torch.manual_seed(params.seed * 1_000_003 + offset)
        built.append(Backbone.build(spec, device, channels_last=channels_last, load_weights=load_weights))
    return FeatureSource(frames, built[0], built[1], params, device=device, precision=precision,
                         channels_last=channels_last)
