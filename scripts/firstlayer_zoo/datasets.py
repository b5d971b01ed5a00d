"""Dataset sources: one small class per source, registered by name.

A source prepares its files under a root folder (downloading and verifying
where it has to) and then yields uint8 images. The workflow records what it
prepared in a manifest so that statistics rerun only when the data changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Iterator

import numpy as np

DATASET_SOURCES: dict[str, type["DatasetSource"]] = {}


def register(cls: type["DatasetSource"]) -> type["DatasetSource"]:
    DATASET_SOURCES[cls.source] = cls
    return cls


class DatasetSource:
    source: ClassVar[str]

    def __init__(self, name: str, options: dict):
        self.name = name
        self.options = options

    def prepare(self, root: Path) -> dict:
        """Make the data available under root; return a manifest describing it."""
        raise NotImplementedError

    def images(self, root: Path) -> Iterator[np.ndarray]:
        """uint8 images as (H, W, C) or (H, W) arrays, in a fixed order."""
        raise NotImplementedError


def dataset_source(name: str, options: dict) -> DatasetSource:
    try:
        cls = DATASET_SOURCES[options["source"]]
    except KeyError:
        raise ValueError(
            f"dataset {name!r}: unknown source {options.get('source')!r}; "
            f"choose one of {sorted(DATASET_SOURCES)}"
        ) from None
    return cls(name, options)


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    from skimage import data

    stereo = {"motorcycle_left": 0, "motorcycle_right": 1}
    if name in stereo:
        return lambda: data.stereo_motorcycle()[stereo[name]]
    try:
        return getattr(data, name)
    except AttributeError:
        raise ValueError(f"scikit-image ships no image named {name!r}") from None


@register
class EmbeddedPhotos(DatasetSource):
    """Colour photographs shipped inside scikit-image: no download."""

    source = "skimage"
    DEFAULT_IMAGES = (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "motorcycle_left",
        "motorcycle_right",
        "hubble_deep_field",
    )

    @property
    def image_names(self) -> list[str]:
        return list(self.options.get("images") or self.DEFAULT_IMAGES)

    def prepare(self, root: Path) -> dict:
        entries = []
        for name in self.image_names:
            image = _skimage_loader(name)()
            entries.append({"name": name, "shape": list(image.shape)})
        return {"source": self.source, "images": entries, "n_images": len(entries)}

    def images(self, root: Path) -> Iterator[np.ndarray]:
        for name in self.image_names:
            yield _skimage_loader(name)()
