"""Generated digit videos for adaptive frame-selection and coarse-to-fine video demos.

A video is ``FRAMES`` (16) frames of 32x32 RGB whose class (a digit "0".."9") shows in only a few
of them. Each video has 2 to 6 *informative* frames, at random positions (in a third of the
videos clustered in a short window, so middle frames are informative a little more often),
showing one of scikit-learn's digits (``load_digits``) of the video's class, jittered in size,
position, contrast and noise; some are *weak* (small and faint: readable in the fine 32x32 view,
only a blob in the coarse 8x8 average-pooled one). The other frames are clutter on the same
background: blank, heavy noise, random strokes, a part of a digit of another class, or a blob
moving across the video. So a few well-chosen frames carry the label, and reading only the
first frames often misses it.

Split ``train`` (1200 videos) draws its digits from the even-indexed half of ``load_digits``,
``val`` (300) from the odd half. Classes are balanced (a shuffled cycle of 0..9 per split). Video
``i`` of a split is drawn from a seed of (split, i) alone; keys are ``{split}_{i:04d}``. SRC
must be ``sklearn`` or ``-``. ``informative.npy`` marks the informative frames for figures and
analysis; a training stage must not use it.
"""

from __future__ import annotations

import functools
import io
import zlib

import numpy as np

from frugalcv.errors import SourceLayoutError

from ._digit_frames import CLUTTER_KINDS, CLUTTER_P, COARSE, FRAME, clutter_frame, digit_frame, video_look
from .base import EncodedSample, Source, register_source

ACCEPTED_SRC = ("sklearn", "-")
FRAMES = 16
NUM_CLASSES = 10
SPLIT_SIZES = {"train": 1200, "val": 300}
#: digit ``i`` of ``load_digits`` serves the split whose parity ``i % 2`` is this
SPLIT_PARITY = {"train": 0, "val": 1}
INFORMATIVE_RANGE = (2, 6)
CLUSTERED_P, WEAK_P = 1 / 3, 0.35
SEED = 0x71DE0


def sample_rng(split: str, index: int) -> np.random.Generator:
    """The generator of video ``index`` of ``split``: the same numbers in any process."""
    return np.random.default_rng(np.random.SeedSequence([SEED, zlib.crc32(split.encode()), index]))


@functools.lru_cache(maxsize=4)
def split_labels(split: str) -> np.ndarray:
    """The class of every video of ``split``: each class equally often, in a fixed shuffled order."""
    rng = np.random.default_rng(np.random.SeedSequence([SEED, zlib.crc32(split.encode())]))
    return rng.permutation(np.arange(SPLIT_SIZES[split]) % NUM_CLASSES)


@functools.lru_cache(maxsize=4)
def digit_pools(split: str) -> tuple[np.ndarray, ...]:
    """Per class, the 8x8 digits (values 0..16) of ``split``'s half of ``load_digits``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    half = np.arange(len(data.target)) % 2 == SPLIT_PARITY[split]
    return tuple(data.images[half & (data.target == c)] for c in range(NUM_CLASSES))


def informative_positions(rng: np.random.Generator) -> np.ndarray:
    """A bool [FRAMES] mask of 2..6 frames: anywhere, or (sometimes) within a short window."""
    count = int(rng.integers(INFORMATIVE_RANGE[0], INFORMATIVE_RANGE[1] + 1))
    if rng.random() < CLUSTERED_P:
        window = min(FRAMES, count + int(rng.integers(0, 3)))
        start = int(rng.integers(0, FRAMES - window + 1))
        chosen = start + rng.choice(window, count, replace=False)
    else:
        chosen = rng.choice(FRAMES, count, replace=False)
    mask = np.zeros(FRAMES, dtype=bool)
    mask[chosen] = True
    return mask


def video_digits(split: str, index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(uint8 [T, 32, 32, 3] frames, uint8 [T] informative marks, class) of video ``index``."""
    label = int(split_labels(split)[index])
    rng = sample_rng(split, index)
    pools = digit_pools(split)
    digit = pools[label][int(rng.integers(len(pools[label])))]
    look = video_look(rng)
    informative = informative_positions(rng)
    frames = []
    for t in range(FRAMES):
        if informative[t]:
            frames.append(digit_frame(digit, bool(rng.random() < WEAK_P), look, rng))
        else:
            kind = CLUTTER_KINDS[int(rng.choice(len(CLUTTER_KINDS), p=CLUTTER_P))]
            other = (label + int(rng.integers(1, NUM_CLASSES))) % NUM_CLASSES
            other_digit = pools[other][int(rng.integers(len(pools[other])))]
            frames.append(clutter_frame(kind, t, other_digit, look, rng))
    return np.stack(frames), informative.astype(np.uint8), label


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


@register_source
class VideoDigitsSource(Source):
    kind = "video-digits"
    task = "video_frames"
    splits = ("train", "val")

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        if str(root) not in ACCEPTED_SRC:
            raise SourceLayoutError(
                f"{self.kind}: the videos are generated from scikit-learn's bundled digits, "
                f"so SRC must be 'sklearn' or '-', not {root!r}"
            )

    def __len__(self) -> int:
        return SPLIT_SIZES[self.split]

    def class_names(self) -> list[str]:
        return [str(d) for d in range(NUM_CLASSES)]

    def schema(self) -> dict[str, str]:
        return {
            "frames.npy": f"uint8 [{FRAMES}, {FRAME}, {FRAME}, 3] RGB frames (np.save, no pickle)",
            "informative.npy": f"uint8 [{FRAMES}] 1 where the frame shows the class (analysis only)",
            "cls": "digit 0-9",
        }

    def encode(self, index: int) -> EncodedSample:
        frames, informative, label = video_digits(self.split, index)
        return EncodedSample(
            f"{self.split}_{index:04d}",
            {
                "frames.npy": npy_bytes(frames),
                "informative.npy": npy_bytes(informative),
                "cls": str(label).encode("ascii"),
            },
        )

    def extra_manifest(self) -> dict:
        return {"frames": FRAMES, "frame_size": [FRAME, FRAME], "coarse_size": [COARSE, COARSE]}
