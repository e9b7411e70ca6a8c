"""Videos stored as a folder of frame images each: ``SRC/<class>/<video>/<frame>.jpg|png``.

The frames of a video are its ``.jpg`` / ``.jpeg`` / ``.png`` files (any case) sorted by name
(write them zero-padded, ``00001.jpg``; the layouts frugalcv writes hold one frame per second);
other files and hidden entries are skipped. Classes are the sorted class folder names.

Splits: when SRC holds any of the folders ``train``, ``val``, ``test``, each is a split laid out
as above (``SRC/<split>/<class>/<video>/...``) and class indices come from ``SRC/train`` when it
exists, so that every split agrees (a class folder that train lacks is an error); otherwise SRC
itself is the class tree and all its videos are in ``train``.

A video may instead be one file (``SRC/<class>/<video>.mp4``, ``.avi``, ``.mkv``, ``.mov``,
``.webm``), decoded with PyAV at one frame per second, only where ``import av`` works; without
PyAV such a file is an error that names it: extract its frames first.

A sample is ``frames.npy`` (uint8 [T, H, W, 3], the frames decoded to RGB; every frame of a
video must have the same size) and ``cls``. Keys are ``<class>/<video>`` made safe.
"""

from __future__ import annotations

import io
import posixpath

import numpy as np

from frugalcv.errors import FrugalError, SourceLayoutError
from frugalcv.sharding.decode import decode_image

from ._common import exists, join, list_dir, read_bytes, unique_keys
from .base import EncodedSample, Source, register_source

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
SPLITS = ("train", "val", "test")


def has_split_folders(root: str, kind: str) -> bool:
    """True when ``root`` holds a ``train``, ``val`` or ``test`` folder (the split layout)."""
    return bool(set(list_dir(root, "the videos folder", kind)[0]) & set(SPLITS))


def pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def decode_video_file(url: str, fps: float = 1.0) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of a video file, the first frame of every ``1/fps`` seconds (PyAV)."""
    import av
    import fsspec

    frames, next_time = [], 0.0
    with fsspec.open(url, "rb") as f, av.open(f) as container:
        for frame in container.decode(video=0):
            time = frame.time if frame.time is not None else next_time
            if time + 1e-6 >= next_time:
                frames.append(frame.to_ndarray(format="rgb24"))
                next_time = time + 1.0 / fps
    if not frames:
        raise FrugalError(f"{url!r}: no video frames could be decoded")
    return np.stack(frames)


@register_source
class VideoFramesSource(Source):
    kind = "video-frames"
    task = "video_frames"
    splits = SPLITS

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        if has_split_folders(root, self.kind):
            self.tree, train = join(root, split), join(root, "train")
            classes_from = train if split != "train" and exists(train) else self.tree
        else:
            if split != "train":
                raise SourceLayoutError(f"{self.kind}: {root!r} has no train/val/test folders, so all its "
                                        f"videos are in 'train'; there is no split {split!r}")
            self.tree = classes_from = root
        class_dirs = list_dir(self.tree, f"the {split} split folder (one sub-folder per class)", self.kind)[0]
        if not class_dirs:
            raise SourceLayoutError(f"{self.kind}: expected class folders in {self.tree!r} "
                                    "(<class>/<video>/<frame>.jpg)")
        self._classes = (class_dirs if classes_from == self.tree
                         else list_dir(classes_from, "the train split folder", self.kind)[0])
        unknown = sorted(set(class_dirs) - set(self._classes))
        if unknown:
            raise SourceLayoutError(f"{self.kind}: class folder {join(self.tree, unknown[0])!r} has no "
                                    f"counterpart in {classes_from!r}, whose folders define the class indices")
        self._list_videos(class_dirs)

    def _list_videos(self, class_dirs: list[str]) -> None:
        index = {name: i for i, name in enumerate(self._classes)}
        self.videos: list[str] = []  # "<class>/<video>" relative to the split's tree
        self.frames: list[list[str] | None] = []  # frame file names; None for a video file
        self.labels: list[int] = []
        for name in class_dirs:
            class_url = join(self.tree, name)
            video_dirs, files = list_dir(class_url, "a class folder", self.kind)
            video_files = [f for f in files if f.lower().endswith(VIDEO_SUFFIXES)]
            if video_files and not pyav_available():
                raise SourceLayoutError(
                    f"{self.kind}: {join(class_url, video_files[0])!r} is a video file, which needs PyAV "
                    "(`import av` fails here); extract its frames first, one folder of images per video "
                    "at 1 fps, e.g. ffmpeg -i VIDEO.mp4 -vf fps=1 VIDEO/%05d.jpg")
            for video in video_dirs:
                url = join(class_url, video)
                frames = [f for f in list_dir(url, "a video folder", self.kind)[1]
                          if f.lower().endswith(FRAME_SUFFIXES)]
                if not frames:
                    raise SourceLayoutError(f"{self.kind}: video folder {url!r} holds no .jpg/.jpeg/.png frames")
                self.videos.append(f"{name}/{video}")
                self.frames.append(frames)
                self.labels.append(index[name])
            for file in video_files:
                self.videos.append(f"{name}/{file}")
                self.frames.append(None)
                self.labels.append(index[name])
        if not self.videos:
            raise SourceLayoutError(f"{self.kind}: no videos (folders of frames) in the class folders of "
                                    f"{self.tree!r}")
        order = sorted(range(len(self.videos)), key=self.videos.__getitem__)
        self.videos = [self.videos[i] for i in order]
        self.frames = [self.frames[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.keys = unique_keys([posixpath.splitext(v)[0] if self.frames[i] is None else v
                                 for i, v in enumerate(self.videos)])

    def __len__(self) -> int:
        return len(self.videos)

    def class_names(self) -> list[str]:
        return list(self._classes)

    def schema(self) -> dict[str, str]:
        return {"frames.npy": "uint8 [T, H, W, 3] RGB frames (np.save, no pickle)",
                "cls": f"class index into the {len(self._classes)} sorted class folder names"}

    def video(self, index: int) -> np.ndarray:
        """uint8 [T, H, W, 3] frames of video ``index``."""
        url = join(self.tree, self.videos[index])
        names = self.frames[index]
        if names is None:
            return decode_video_file(url)
        frames = []
        for name in names:
            frame_url = join(url, name)
            try:
                frame = decode_image(read_bytes(frame_url))
            except OSError as e:
                raise FrugalError(f"cannot decode frame {frame_url!r}: {e}") from e
            if frames and frame.shape != frames[0].shape:
                raise FrugalError(f"frame {frame_url!r} is {frame.shape[1]}x{frame.shape[0]}, but the first "
                                  f"frame of its video is {frames[0].shape[1]}x{frames[0].shape[0]}; every "
                                  "frame of a video must have the same size")
            frames.append(frame)
        return np.stack(frames)

    def encode(self, index: int) -> EncodedSample:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.video(index), dtype=np.uint8), allow_pickle=False)
        return EncodedSample(self.keys[index], {"frames.npy": buf.getvalue(),
                                                "cls": str(self.labels[index]).encode("ascii")})

    def extra_manifest(self) -> dict:
        counts = {len(f) for f in self.frames if f is not None}
        if len(counts) == 1 and all(f is not None for f in self.frames):
            return {"frames": counts.pop()}
        return {"frames": None}
