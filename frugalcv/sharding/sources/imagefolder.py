"""A class-per-folder image tree, as ImageNet's train/val layout: ``SRC/{split}/{class}/*.jpg``.

Files ending in .jpg, .jpeg or .png (any case) are samples; other files and hidden entries are
skipped. Class indices are the positions in the sorted folder names of ``SRC/train`` when it
exists (so train, val and test agree), else of the split itself; a class folder in val/test that
train lacks is an error. RGB JPEG and 8-bit RGB PNG files keep their original bytes; anything
else (grayscale, CMYK, palette, alpha) is converted to RGB and written as PNG. Keys are the
file's path relative to the split, made safe (``n01440764/n01440764_10026.JPEG`` ->
``n01440764_n01440764_10026_JPEG``).
"""

from __future__ import annotations

from frugalcv.errors import SourceLayoutError

from ._common import exists, image_field, join, list_dir, read_bytes, unique_keys
from .base import EncodedSample, Source, register_source

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@register_source
class ImageFolderSource(Source):
    kind = "imagefolder"
    task = "classification"
    splits = ("train", "val", "test")

    def __init__(self, root: str, split: str = "train"):
        super().__init__(root, split)
        split_url = join(root, split)
        class_dirs, loose_files = list_dir(
            split_url, f"the {split} split folder (one sub-folder per class)", self.kind
        )
        if not class_dirs:
            hint = (
                f" (it holds {len(loose_files)} loose files: sort them into class folders)"
                if loose_files
                else ""
            )
            raise SourceLayoutError(f"{self.kind}: expected class folders in {split_url!r}{hint}")
        train_url = join(root, "train")
        if split != "train" and exists(train_url):
            self._classes = list_dir(train_url, "the train split folder", self.kind)[0]
            unknown = sorted(set(class_dirs) - set(self._classes))
            if unknown:
                raise SourceLayoutError(
                    f"{self.kind}: class folder {join(split_url, unknown[0])!r} has no counterpart in "
                    f"{train_url!r}, whose folders define the class indices"
                )
        else:
            self._classes = class_dirs
        index = {name: i for i, name in enumerate(self._classes)}
        self.relpaths: list[str] = []
        self.labels: list[int] = []
        for name in class_dirs:
            for file in list_dir(join(split_url, name), "a class folder", self.kind)[1]:
                if file.lower().endswith(IMAGE_SUFFIXES):
                    self.relpaths.append(f"{name}/{file}")
                    self.labels.append(index[name])
        if not self.relpaths:
            raise SourceLayoutError(
                f"{self.kind}: no .jpg/.jpeg/.png files in the class folders of {split_url!r}"
            )
        self.keys = unique_keys(self.relpaths)

    def __len__(self) -> int:
        return len(self.relpaths)

    def class_names(self) -> list[str]:
        return list(self._classes)

    def schema(self) -> dict[str, str]:
        return {
            "jpg": "RGB image, original JPEG bytes (a sample has either jpg or png)",
            "png": "RGB image as PNG (original bytes, or converted from a non-RGB file)",
            "cls": f"class index into the {len(self._classes)} sorted class folder names",
        }

    def encode(self, index: int) -> EncodedSample:
        url = join(self.root, self.split, self.relpaths[index])
        ext, data, _ = image_field(read_bytes(url), url)
        return EncodedSample(self.keys[index], {ext: data, "cls": str(self.labels[index]).encode("ascii")})
