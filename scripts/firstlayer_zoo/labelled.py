"""A labelled dataset read whole into memory for training: uint8 images of one size and their classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset_sources.base import DatasetSource
from .preprocessing import Preprocessing


def load_labelled(source: DatasetSource, root: str | Path, indices: np.ndarray | None,
                  preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, c, H, W) after the resize and crop of `preprocessing`, class of each image) of the
    images `indices` (a job reads those its dataset's manifest lists: dataset_sources.base.prepared_indices; None: the
    source's own selection)."""
    root = Path(root)
    indices = source.indices(root) if indices is None else indices
    labels = np.array([source.label(root, int(index)) for index in indices], dtype=np.int64)
    images = [preprocessing.apply(image) for image in source.images(root, indices)]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(f"dataset {source.name!r}: images of {len(shapes)} sizes after preprocessing (e.g. "
                         f"{sorted(shapes)[:2]}); training batches need one size: set the zoo's preprocessing "
                         "resize and crop")
    return np.stack(images), labels
