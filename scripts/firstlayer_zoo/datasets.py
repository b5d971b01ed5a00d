"""Dataset sources: one small class per source, registered by name.

A source prepares its files under a root folder (downloading and verifying
where it has to) and then yields uint8 images. The workflow records what it
prepared in a manifest so that statistics rerun only when the data changes.
Any source can be cut to a seeded random sample of its images
(`subsample: {count, seed}`); the sample is recorded in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, ClassVar, Iterator

import numpy as np
from PIL import Image

from .atomic import write_text
from .photos import COLOUR_PHOTOS, check_image_names

DATASET_SOURCES: dict[str, type["DatasetSource"]] = {}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def register(cls: type["DatasetSource"]) -> type["DatasetSource"]:
    DATASET_SOURCES[cls.source] = cls
    return cls


class DatasetSource:
    """Prepare files under a root, then serve images by index in a fixed order.

    Subclasses implement `prepare_files`, `count` and `load`; the base class
    adds subsampling, the manifest, and iteration.
    """

    source: ClassVar[str]

    def __init__(self, name: str, options: dict):
        self.name = name
        self.options = options

    def prepare_files(self, root: Path) -> dict:
        """Make the data available under root; return what describes it (for the manifest)."""
        raise NotImplementedError

    def count(self, root: Path) -> int:
        """Images the source holds, before subsampling."""
        raise NotImplementedError

    def load(self, root: Path, index: int) -> np.ndarray:
        """Image `index` as uint8 (H, W, C) or (H, W)."""
        raise NotImplementedError

    def label(self, root: Path, index: int) -> int:
        """Class of image `index`, for sources whose images have one (training on labels needs it)."""
        raise ValueError(f"dataset {self.name!r}: source {self.source} has no class labels; train on a labelled "
                         "dataset (cifar10, cifar100, svhn, stl10, imagenette, or a folder with one subfolder "
                         "per class) or use task: photo_crops")

    @property
    def subsample(self) -> dict | None:
        return self.options.get("subsample")

    def indices(self, root: Path) -> np.ndarray:
        """The images used, in ascending order: all, or a seeded sample without replacement."""
        available = self.count(root)
        if not self.subsample:
            return np.arange(available)
        wanted = self.subsample["count"]
        if wanted > available:
            raise ValueError(
                f"dataset {self.name!r}: subsample.count is {wanted} but the source holds only "
                f"{available} images; lower datasets.{self.name}.subsample.count"
            )
        rng = np.random.default_rng(self.subsample.get("seed", 0))
        return np.sort(rng.choice(available, size=wanted, replace=False))

    def prepare(self, root: Path) -> dict:
        """Make the data available under root; return a manifest describing it."""
        root = None if root is None else Path(root)
        description = self.prepare_files(root)
        chosen = self.indices(root)
        return {
            **description,
            "source": self.source,
            "n_available": self.count(root),
            "n_images": len(chosen),
            "subsample": self.subsample,
            "indices_sha1": hashlib.sha1(np.ascontiguousarray(chosen, dtype=np.int64).tobytes()).hexdigest(),
        }

    def images(self, root: Path) -> Iterator[np.ndarray]:
        """uint8 images as (H, W, C) or (H, W) arrays, in a fixed order."""
        for index in self.indices(root):
            yield self.load(root, int(index))


def dataset_source(name: str, options: dict) -> DatasetSource:
    try:
        cls = DATASET_SOURCES[options["source"]]
    except KeyError:
        raise ValueError(
            f"dataset {name!r}: unknown source {options.get('source')!r}; "
            f"choose one of {sorted(DATASET_SOURCES)}"
        ) from None
    return cls(name, options)


def prepare_dataset(name: str, options: dict, root: str | Path, manifest: str | Path) -> dict:
    """Prepare a dataset and write its manifest atomically: no manifest unless preparation succeeded."""
    description = dataset_source(name, options).prepare(Path(root))
    write_text(manifest, json.dumps(description, indent=1, sort_keys=True))
    return description


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

    def files(self) -> list[Path]:
        if not hasattr(self, "_files"):
            if not self.folder.is_dir():
                raise FileNotFoundError(
                    f"dataset {self.name!r}: folder {self.folder} does not exist; "
                    f"set datasets.{self.name}.path to a folder of images"
                )
            extensions = tuple(e.lower() for e in self.options.get("extensions") or IMAGE_EXTENSIONS)
            found = sorted(path.relative_to(self.folder).as_posix() for path in self.folder.rglob("*")
                           if path.suffix.lower() in extensions and path.is_file())
            if not found:
                raise FileNotFoundError(
                    f"dataset {self.name!r}: no {'/'.join(extensions)} files under {self.folder}"
                )
            for name in found:
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"dataset {self.name!r}: the file name {ascii(str(self.folder / name))} is not "
                                     "valid UTF-8; rename it (or move it out of the folder)") from None
            self._files = [self.folder / name for name in found]
        return self._files

    def prepare_files(self, root: Path) -> dict:
        listing = "\n".join(f"{p.relative_to(self.folder).as_posix()}\t{p.stat().st_size}" for p in self.files())
        return {"path": str(self.folder), "files_sha1": hashlib.sha1(listing.encode()).hexdigest()}

    def count(self, root: Path) -> int:
        return len(self.files())

    def path_of(self, root: Path, index: int) -> Path:
        return self.files()[index]

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
        path = self.path_of(root, index)
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


# Registers the torchvision-backed sources; imported last because it subclasses DatasetSource.
from .torchvision_sources import TorchvisionSource  # noqa: E402,F401
