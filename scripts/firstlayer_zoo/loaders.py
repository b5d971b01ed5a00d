"""Batches of preprocessed uint8 images for the statistics engine.

`cpu_batches`: a DataLoader whose workers load and preprocess images with PIL,
giving exactly the pixels timm's eval transform gives. (GPU JPEG decoding was
removed: it corrupted the sums on an H200; see docs/benchmarks.md.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .preprocessing import Preprocessing


class PreprocessedImages(Dataset):
    """Image i of a source's selection, preprocessed: uint8 (c, H', W')."""

    def __init__(self, source, root: Path | None, preprocessing: Preprocessing, indices: np.ndarray | None = None):
        self.source = source
        self.root = root
        self.preprocessing = preprocessing
        self.indices = source.indices(root) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> torch.Tensor:
        # A tensor, so that DataLoader workers hand it over in shared memory rather than through a pipe.
        return torch.from_numpy(self.preprocessing.apply(self.source.load(self.root, int(self.indices[position]))))


def same_size_batches(images, max_batch: int = 256) -> Iterator[np.ndarray]:
    """Stack consecutive images (arrays or tensors) of equal shape, so whole batches go through one GEMM."""
    batch: list = []
    for image in images:
        if batch and (image.shape != batch[0].shape or len(batch) == max_batch):
            yield _stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield _stack(batch)


def _stack(images: list):
    return torch.stack(images) if isinstance(images[0], torch.Tensor) else np.stack(images)


def _stack_in_worker(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Collate inside the DataLoader worker: one shared-memory tensor per run of equal shapes.

    Handing the main process one tensor per image costs a shared-memory segment
    each, and that, not decoding, bounded the throughput at ~300 images/s.
    """
    return list(same_size_batches(images, max_batch=len(images)))


def cpu_batches(source, root: Path | None, preprocessing: Preprocessing, workers: int = 0,
                batch_size: int = 256, indices: np.ndarray | None = None) -> Iterator[torch.Tensor]:
    """Preprocessed images `indices` (None: the source's selection), decoded by `workers` processes (0: in this one)."""
    loader = DataLoader(PreprocessedImages(source, root, preprocessing, indices), batch_size=batch_size,
                        num_workers=workers, collate_fn=_stack_in_worker, persistent_workers=False,
                        prefetch_factor=4 if workers else None)
    for groups in loader:
        yield from groups
