"""Dataset converters ("sources"); importing this package registers every kind."""

from . import (  # noqa: F401
    cifar,
    cityscapes,
    digits,
    gta5,
    imagefolder,
    scn_digit_scenes,
    scn_shapes,
    street_scenes,
    synthia,
    video_digits,
    video_features,
    video_frames,
    voc,
    voc_pairs,
)
from .base import SOURCES, EncodedSample, Source, get_source, register_source, safe_key

__all__ = ["SOURCES", "EncodedSample", "Source", "get_source", "register_source", "safe_key"]
