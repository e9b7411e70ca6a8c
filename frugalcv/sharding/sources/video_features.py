"""Pre-extracted per-frame video features (FCVID, ActivityNet), one ``.npy`` [T, D] per video.

The index is ``SRC/index.csv`` (header ``path,label`` and optionally ``split``) or, when there is
no CSV, ``SRC/index.json``: a list of ``{"path", "label"[, "split"]}`` objects, or an object
``{"videos": [...], "classes": [...]}``. ``path`` is relative to SRC.

Rules:
- class names come from ``SRC/classes.txt`` (one per line) if present, else the JSON
  ``"classes"``, else the sorted unique string labels of the whole index (every split, so that
  indices agree across splits); when every label is an integer and no names are given, the
  names are ``"0"``..``"N-1"``.
- a label that is a class name maps to its index; an integer label (a JSON int, or all digits in
  the CSV when it is not itself a class name) is the index.
- without a split column/key every video is in ``train``; with one, every row must say
  ``train``, ``val`` or ``test``.
- samples are sorted by path; keys are the paths without ``.npy``, made safe.

``features.npy`` is the array cast to float32 (C order, no pickle); arrays are loaded with
``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from frugalcv.errors import FrugalError, SourceLayoutError

from ._common import exists, join, missing_files, read_bytes, unique_keys
from .base import EncodedSample, Source, register_source


def _read_index(root: str, kind: str) -> tuple[list[dict], list[str] | None, str]:
    """(rows, class names from the JSON or None, index url)."""
    csv_url, json_url = join(root, "index.csv"), join(root, "index.json")
    if exists(csv_url):
        reader = csv.DictReader(io.StringIO(read_bytes(csv_url).decode("utf-8-sig")))
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise SourceLayoutError(f"{kind}: {csv_url!r} needs a header with the columns path,label[,split]")
        return list(reader), None, csv_url
    if exists(json_url):
        doc = json.loads(read_bytes(json_url))
        classes = None
        if isinstance(doc, dict):
            if "videos" not in doc:
                raise SourceLayoutError(f"{kind}: {json_url!r} is an object without a 'videos' list")
            classes = doc.get("classes")
            doc = doc["videos"]
        if not isinstance(doc, list) or not all(
            isinstance(r, dict) and {"path", "label"} <= set(r) for r in doc
        ):
            raise SourceLayoutError(
                f"{kind}: every entry of {json_url!r} must be an object with 'path' and 'label'"
            )
        return doc, classes, json_url
    raise SourceLayoutError(f"{kind}: expected an index at {csv_url!r} or {json_url!r}, but neither exists")


def _as_int(label) -> int | None:
    if isinstance(label, bool):
        return None
    if isinstance(label, int):
        return label
    if isinstance(label, str) and label.strip().isdigit():
        return int(label.strip())
    return None


@register_source
class VideoFeaturesSource(Source):
    kind = "video-features"
    task = "video_features"
    splits = ("train", "val", "test")

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        rows, classes, index_url = _read_index(root, self.kind)
        classes_url = join(root, "classes.txt")
        if exists(classes_url):
            classes = [
                line.strip() for line in read_bytes(classes_url).decode("utf-8").splitlines() if line.strip()
            ]
        has_split = any(str(r.get("split") or "").strip() for r in rows)
        if classes is None:
            strings = {str(r["label"]).strip() for r in rows if _as_int(r["label"]) is None}
            if strings:
                classes = sorted(strings)
            else:
                classes = [str(i) for i in range(max((_as_int(r["label"]) for r in rows), default=-1) + 1)]
        self._classes = [str(c) for c in classes]
        by_name = {name: i for i, name in enumerate(self._classes)}

        selected: list[tuple[str, int]] = []
        for n, row in enumerate(rows, start=1):
            where = f"{index_url!r} entry {n}"
            row_split = str(row.get("split") or "").strip() if has_split else "train"
            if row_split not in self.splits:
                raise SourceLayoutError(
                    f"{self.kind}: {where} has split {row_split!r}; expected one of {', '.join(self.splits)}"
                )
            label = row["label"]
            index = by_name.get(str(label).strip()) if not isinstance(label, int) else None
            if index is None:
                index = _as_int(label)
            if index is None or not 0 <= index < len(self._classes):
                raise SourceLayoutError(
                    f"{self.kind}: {where} has label {label!r}, which is neither one of the "
                    f"{len(self._classes)} class names nor an index below {len(self._classes)}"
                )
            path = str(row["path"]).strip().lstrip("/")
            if not path:
                raise SourceLayoutError(f"{self.kind}: {where} has an empty path")
            if row_split == split:
                selected.append((path, index))
        if not selected:
            detail = "" if has_split else " (the index has no split column, so every video is in 'train')"
            raise SourceLayoutError(f"{self.kind}: {index_url!r} has no videos in split {split!r}{detail}")
        selected.sort()
        self.paths = [p for p, _ in selected]
        self.labels = [c for _, c in selected]
        missing = missing_files(root, self.paths)
        if missing:
            raise SourceLayoutError(
                f"{self.kind}: {index_url!r} lists {missing[0]!r}, but {join(root, missing[0])!r} does not exist"
                + (f" ({len(missing) - 1} more are missing)" if len(missing) > 1 else "")
            )
        self.keys = unique_keys([p[: -len(".npy")] if p.endswith(".npy") else p for p in self.paths])

    def __len__(self) -> int:
        return len(self.paths)

    def class_names(self) -> list[str]:
        return list(self._classes)

    def schema(self) -> dict[str, str]:
        return {"features.npy": "float32 [T, D] frame features (np.save, no pickle)", "cls": "class index"}

    def encode(self, index: int) -> EncodedSample:
        url = join(self.root, self.paths[index])
        try:
            features = np.load(io.BytesIO(read_bytes(url)), allow_pickle=False)
        except ValueError as e:
            raise FrugalError(f"cannot load {url!r} as a .npy array without pickle: {e}") from e
        if features.ndim != 2:
            raise FrugalError(
                f"{url!r} holds an array of shape {features.shape}; expected [T, D] frame features"
            )
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
        return EncodedSample(
            self.keys[index], {"features.npy": buf.getvalue(), "cls": str(self.labels[index]).encode("ascii")}
        )
