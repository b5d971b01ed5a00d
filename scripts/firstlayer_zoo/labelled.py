"""A labelled dataset read whole into memory for training: uint8 images of one size and their classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .datasets import dataset_source
from .preprocessing import Preprocessing


def load_labelled(name: str, options: dict, root: str | Path, preprocessing: Preprocessing
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, c, H, W) after the resize and crop of `preprocessing`, class of each image)."""
    source = dataset_source(name, options)
    root = Path(root)
    indices = [int(index) for index in source.indices(root)]
    labels = np.array([source.label(root, index) for index in indices], dtype=np.int64)
    images = [preprocessing.apply(image) for image in source.images(root)]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(f"dataset {name!r}: images of {len(shapes)} sizes after preprocessing (e.g. "
                         f"{sorted(shapes)[:2]}); training batches need one size: set the zoo's preprocessing "
                         "resize and crop")
    return np.stack(images), labels
