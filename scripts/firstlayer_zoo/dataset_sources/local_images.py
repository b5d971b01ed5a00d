"""Dataset sources already on this machine: `skimage` (photos inside scikit-image's wheel) and `folder` (image files)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .base import DatasetSource, register
from ..photos import COLOUR_PHOTOS, SHORTER_SIDES, check_image_names
from ..zoo_sources.local_files import inside

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    from skimage import data

    stereo = {"motorcycle_left": 0, "motorcycle_right": 1}
    if name in stereo:
        return lambda: data.stereo_motorcycle()[stereo[name]]
    return getattr(data, name)


@register
class EmbeddedPhotos(DatasetSource):
    """Colour photographs shipped inside scikit-image: no download."""

    source = "skimage"

    @classmethod
    def check_options(cls, name: str, options: dict) -> None:
        if options.get("images"):
            check_image_names(name, options["images"])

    @classmethod
    def smallest_side(cls, options: dict) -> int | None:
        return min(SHORTER_SIDES[name] for name in options.get("images") or COLOUR_PHOTOS)

    @property
    def image_names(self) -> list[str]:
        names = list(self.options.get("images") or COLOUR_PHOTOS)
        check_image_names(self.name, names)
        return names

    def prepare_files(self, root: Path) -> dict:
        entries = []
        for name in self.image_names:
            image = _skimage_loader(name)()
            entries.append({"name": name, "shape": list(image.shape)})
        return {"images": entries}

    def count(self, root: Path) -> int:
        return len(self.image_names)

    def load(self, root: Path, index: int) -> np.ndarray:
        return _skimage_loader(self.image_names[index])()


@register
class ImageFolder(DatasetSource):
    """Every JPEG/PNG under a folder, recursively, in sorted path order (ImageNet train/val or any folder)."""

    source = "folder"

    @property
    def folder(self) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(self.options["path"])))

    def read_roots(self) -> list[Path]:
        return [self.folder]

    def files(self) -> list[Path]:
        """The images, in sorted path order; symlinks leading out of the folder are left out (see `skipped`)."""
        if not hasattr(self, "_files"):
            if not self.folder.is_dir():
                raise FileNotFoundError(
                    f"dataset {self.name!r}: folder {self.folder} does not exist; "
                    f"set datasets.{self.name}.path to a folder of images"
                )
            extensions = tuple(e.lower() for e in self.options.get("extensions") or IMAGE_EXTENSIONS)
            root = self.folder.resolve()
            found, self._skipped = [], []
            for name in sorted(path.relative_to(self.folder).as_posix() for path in self.folder.rglob("*")
                               if path.suffix.lower() in extensions and path.is_file()):
                if inside(self.folder / name, root):
                    found.append(name)
                else:  # as a zoo's files: nothing outside the root is opened, and the image says why it is left out
                    self._skipped.append({"file": name, "reason": self.outside_reason(self.folder / name)})
            if not found:
                skipped = f" ({len(self._skipped)} symlinks leading out of it skipped)" if self._skipped else ""
                raise FileNotFoundError(
                    f"dataset {self.name!r}: no {'/'.join(extensions)} files under {self.folder}{skipped}"
                )
            for name in found:
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"dataset {self.name!r}: the file name {ascii(str(self.folder / name))} is not "
                                     "valid UTF-8; rename it (or move it out of the folder)") from None
            self._files = [self.folder / name for name in found]
        return self._files

    def outside_reason(self, path: Path) -> str:
        return (f"{path}: a symlink to a file outside the dataset's folder {self.folder.resolve()}, which this "
                "workflow does not read; copy the image into the folder instead")

    @property
    def skipped(self) -> list[dict]:
        """Images left out, each {"file": path relative to the folder, "reason": why}."""
        self.files()
        return self._skipped

    def prepare_files(self, root: Path) -> dict:
        listing = "\n".join(f"{p.relative_to(self.folder).as_posix()}\t{p.stat().st_size}" for p in self.files())
        for entry in self.skipped:
            print(f"dataset {self.name!r}: skipped {entry['reason']}")
        return {"path": str(self.folder), "files_sha1": hashlib.sha1(listing.encode()).hexdigest(),
                "skipped": self.skipped}

    def count(self, root: Path) -> int:
        return len(self.files())

    def path_of(self, root: Path, index: int) -> Path:
        return self.files()[index]

    def image_name(self, root: Path, index: int) -> str:
        return str(self.path_of(root, index))

    def label(self, root: Path, index: int) -> int:
        """ImageFolder's convention: the class is the first subfolder, classes numbered in sorted order."""
        if not hasattr(self, "_classes"):
            self._classes = {name: number for number, name in enumerate(sorted(
                {path.relative_to(self.folder).parts[0] for path in self.files()}))}
        parts = self.path_of(root, index).relative_to(self.folder).parts
        if len(parts) < 2:
            raise ValueError(f"dataset {self.name!r}: {self.folder / parts[0]} is not in a class subfolder; "
                             "training on labels needs one subfolder per class under the dataset's path")
        return self._classes[parts[0]]

    def load(self, root: Path, index: int) -> np.ndarray:
        from PIL import Image  # here, not at start-up: planning reads no image

        path = self.path_of(root, index)
        if not inside(path, self.folder.resolve()):  # made a link out since it was listed
            raise ValueError(self.outside_reason(path))
        try:
            with Image.open(path) as image:
                return rgb_uint8(image)
        except Image.DecompressionBombError:
            raise ValueError(f"{path}: more pixels than PIL will decode (Image.MAX_IMAGE_PIXELS, a guard against "
                             "decompression bombs); remove it or shrink it") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{path}: not a readable image, truncated or corrupt ({type(error).__name__}); "
                             "remove or replace it") from None


def rgb_uint8(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8; 16- and 32-bit greyscale scaled down from their full range rather than clipped at 255."""
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image).astype(np.float64)
        grey = np.rint(wide / 257.0).clip(0, 255).astype(np.uint8)  # 65535 / 257 = 255 exactly
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))
