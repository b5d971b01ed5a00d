"""Batches of preprocessed uint8 images for the statistics engine.

`cpu_batches`: a DataLoader whose workers load and preprocess images with PIL,
giving exactly the pixels timm's eval transform gives. (GPU JPEG decoding was
removed: it corrupted the sums on an H200; see docs/benchmarks.md.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .preprocessing import Preprocessing
from .rule_io import ClearError


class ImageError(ClearError, ValueError):
    """An image the statistics cannot use; the message names it (its file, or its index) and the fix.

    A ValueError as the sources' own image errors are (callers such as `inspect` catch those), and a ClearError:
    the console gets the line alone."""


@dataclass(frozen=True)
class _Unusable:
    """What a worker hands back instead of an image it cannot use: the reason, raised in the main process (an
    exception raised in a DataLoader worker comes back with its traceback folded into the message)."""

    reason: str


class PreprocessedImages(Dataset):
    """Image i of a source's selection, preprocessed: uint8 (c, H', W').

    With `kernel_size`, an image smaller than the kernel after preprocessing is refused naming it: it has
    no patch to give.
    """

    def __init__(self, source, root: Path | None, preprocessing: Preprocessing, indices: np.ndarray | None = None,
                 kernel_size: int | None = None):
        self.source = source
        self.root = root
        self.preprocessing = preprocessing
        self.indices = source.indices(root) if indices is None else indices
        self.kernel_size = kernel_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> torch.Tensor | _Unusable:
        index = int(self.indices[position])
        try:
            image = self.preprocessing.apply(self.source.load(self.root, index))
        except ValueError as error:  # the sources' unreadable, oversized or out-of-folder images, named
            return _Unusable(str(error))
        k = self.kernel_size
        if k is not None and min(image.shape[-2:]) < k:
            height, width = image.shape[-2:]
            return _Unusable(
                f"{self.source.image_name(self.root, index)}: {height}x{width} pixels after preprocessing, smaller "
                f"than the {k}x{k} kernel whose patches are wanted; remove it from dataset {self.source.name!r}, or "
                f"give the zoos of {k}x{k} stems on it a preprocessing whose resize (and crop) is at least {k}")
        # A tensor, so that DataLoader workers hand it over in shared memory rather than through a pipe.
        return torch.from_numpy(image)


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


def _stack_in_worker(images: list[torch.Tensor | _Unusable]) -> list[torch.Tensor | _Unusable]:
    """Collate inside the DataLoader worker: one shared-memory tensor per run of equal shapes.

    Handing the main process one tensor per image costs a shared-memory segment
    each, and that, not decoding, bounded the throughput at ~300 images/s.
    An unusable image stands for its whole batch.
    """
    unusable = [image for image in images if isinstance(image, _Unusable)]
    return unusable[:1] or list(same_size_batches(images, max_batch=len(images)))


def cpu_batches(source, root: Path | None, preprocessing: Preprocessing, workers: int = 0,
                batch_size: int = 256, indices: np.ndarray | None = None,
                kernel_size: int | None = None) -> Iterator[torch.Tensor]:
    """Preprocessed images `indices` (None: the source's selection), decoded by `workers` processes (0: in this one).

    An image that cannot be used (unreadable, or smaller than `kernel_size`) raises ImageError naming it.
    """
    loader = DataLoader(PreprocessedImages(source, root, preprocessing, indices, kernel_size), batch_size=batch_size,
                        num_workers=workers, collate_fn=_stack_in_worker, persistent_workers=False,
                        prefetch_factor=4 if workers else None)
    for groups in loader:
        for group in groups:
            if isinstance(group, _Unusable):
                raise ImageError(group.reason)
            yield group
