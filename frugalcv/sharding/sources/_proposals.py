"""The proposals file: object proposals (EdgeBox, detector output) per image, one per line.

CSV, ``image_id,x1,y1,x2,y2,score``: pixel edges of the box, 0-based (a box of the whole W x H
image is ``0,0,W,H``), and any score where higher is better. A first line starting with
``image_id`` is a header; blank lines and lines starting with ``#`` are skipped. A name ending in
``.gz`` is read gunzipped. A line that does not parse is an error naming ``file:line``.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import fsspec

from frugalcv.errors import SourceLayoutError

from ._voc_layout import check_image_id
from .patch_pairs import Box

COLUMNS = ("image_id", "x1", "y1", "x2", "y2", "score")


def parse_proposal(line: str, where: str, kind: str) -> tuple[str, Box, float]:
    """``(image id, box, score)`` of one line; SourceLayoutError naming ``where`` (``file:line``)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != len(COLUMNS):
        raise SourceLayoutError(f"{kind}: {where}: expected {len(COLUMNS)} comma-separated values "
                                f"({','.join(COLUMNS)}), got {len(parts)}: {line.strip()[:120]!r}")
    image_id = check_image_id(parts[0], where, kind)
    try:
        x1, y1, x2, y2, score = (float(p) for p in parts[1:])
    except ValueError:
        raise SourceLayoutError(f"{kind}: {where}: x1, y1, x2, y2 and score must be numbers: "
                                f"{line.strip()[:120]!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, score)):
        raise SourceLayoutError(f"{kind}: {where}: values must be finite: {line.strip()[:120]!r}")
    if x2 <= x1 or y2 <= y1:
        raise SourceLayoutError(f"{kind}: {where}: expected x1 < x2 and y1 < y2 (pixel edges, not x, y, w, h): "
                                f"{line.strip()[:120]!r}")
    return image_id, (x1, y1, x2, y2), score


@dataclass(frozen=True)
class Proposals:
    """The boxes kept per image (best score first) and the sha256 of the file they came from."""

    boxes: dict[str, list[Box]]
    sha256: str
    lines: int


def read_proposals(url: str, kind: str, count: int, accept: Callable[[str, Box], Box | None]) -> Proposals:
    """Per image, the ``count`` best-scoring proposals that ``accept(image_id, box)`` keeps (it returns the
    box to keep, e.g. clipped, or None); equal scores keep file order. Streams the file, holding at most
    ``count`` boxes per image."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise SourceLayoutError(f"{kind}: expected the proposals file at {url!r}, but it does not exist")
    heaps: dict[str, list[tuple[float, int, Box]]] = defaultdict(list)
    digest = hashlib.sha256()
    n = 0
    with fsspec.open(url, "rb", compression="infer") as f:
        for n, raw in enumerate(f, start=1):
            digest.update(raw)
            text = raw.decode("utf-8", errors="replace").strip()
            if not text or text.startswith("#") or (n == 1 and text.startswith("image_id")):
                continue
            image_id, box, score = parse_proposal(text, f"{url}:{n}", kind)
            kept = accept(image_id, box)
            if kept is None:
                continue
            heap = heaps[image_id]
            item = (score, -n, kept)  # the smallest is the worst: lowest score, then latest line
            if len(heap) < count:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
    boxes = {image_id: [box for _, _, box in sorted(heap, key=lambda t: t[:2], reverse=True)]
             for image_id, heap in heaps.items()}
    return Proposals(boxes, digest.hexdigest(), n)
