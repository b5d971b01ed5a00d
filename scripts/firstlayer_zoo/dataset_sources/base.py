"""The dataset-source interface and its registry; the sources themselves are the other modules of this package.

A source prepares its files under a root folder (downloading and verifying
where it has to) and then yields uint8 images. The workflow records what it
prepared in a manifest so that statistics rerun only when the data changes.
Any source can be cut to a seeded random sample of its images
(`subsample: {count, seed}`); the sample is recorded in the manifest.
This module imports no source (zoo_sources/base.py has the same shape).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np

from ..registry import Registry

DATASET_SOURCES = Registry("dataset")
register = DATASET_SOURCES.register


class DatasetSource:
    """Prepare files under a root, then serve images by index in a fixed order.

    Subclasses implement `prepare_files`, `count` and `load`; the base class
    adds subsampling, the manifest, and iteration.
    """

    source: ClassVar[str]
    remote: ClassVar[bool] = False  # its files are downloaded (see rule fetch_remote)
    # The side of every image, where the source fixes it (CIFAR's 32); None where images vary.
    image_side: ClassVar[int | None] = None

    def __init__(self, name: str, options: dict):
        self.name = name
        self.options = options

    @classmethod
    def check_options(cls, name: str, options: dict) -> None:
        """Refuse at start-up, cheaply and without the data, options the schema cannot judge."""

    def read_roots(self) -> list[Path]:
        """The user's folders this dataset reads (never writes): the outdir may be none of them, nor hold one."""
        return []

    @classmethod
    def smallest_side(cls, options: dict) -> int | None:
        """The shorter side of the smallest image, known without reading the data; None where it is not."""
        return cls.image_side

    def prepare_files(self, root: Path) -> dict:
        """Make the data available under root; return what describes it (for the manifest)."""
        raise NotImplementedError

    def count(self, root: Path) -> int:
        """Images the source holds, before subsampling."""
        raise NotImplementedError

    def load(self, root: Path, index: int) -> np.ndarray:
        """Image `index` as uint8 (H, W, C) or (H, W)."""
        raise NotImplementedError

    def image_name(self, root: Path, index: int) -> str:
        """Image `index` as a message names it: its file where it has one (sources that have override this)."""
        return f"image {index} of dataset {self.name!r}"

    def label(self, root: Path, index: int) -> int:
        """Class of image `index`, for sources whose images have one (training on labels needs it)."""
        labelled = sorted(name for name, source in DATASET_SOURCES.items() if source.label is not DatasetSource.label)
        raise ValueError(f"dataset {self.name!r}: source {self.source} has no class labels; train on a dataset of a "
                         f"labelled source ({', '.join(labelled)}; a folder needs one subfolder per class) or use "
                         "task: photo_crops")

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
            # The sample itself, so that the jobs reading the data use the images prepared (all: none listed).
            "indices": chosen.tolist() if self.subsample else None,
            "indices_sha1": hashlib.sha1(np.ascontiguousarray(chosen, dtype=np.int64).tobytes()).hexdigest(),
        }

    def images(self, root: Path, indices: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """uint8 images as (H, W, C) or (H, W) arrays, in a fixed order: `indices` (prepared_indices), or all used."""
        for index in self.indices(root) if indices is None else indices:
            yield self.load(root, int(index))


def prepared_indices(manifest_path: str | Path) -> np.ndarray:
    """The images a dataset's manifest says were prepared: its subsample, or every image it counted."""
    manifest = json.loads(Path(manifest_path).read_text())
    if manifest.get("indices") is not None:
        return np.asarray(manifest["indices"], dtype=np.int64)
    return np.arange(manifest["n_available"])
