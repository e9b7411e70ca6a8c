"""Dataset converters ("sources"); importing this package registers every kind."""

from . import cifar, cityscapes, digits, gta5, imagefolder, street_scenes, synthia, video_features  # noqa: F401
from .base import SOURCES, EncodedSample, Source, get_source, register_source, safe_key

__all__ = ["SOURCES", "EncodedSample", "Source", "get_source", "register_source", "safe_key"]
