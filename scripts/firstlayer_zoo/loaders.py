"""Batches of preprocessed uint8 images for the statistics engine.

Two ways in:
- `cpu_batches`: a DataLoader whose workers load and preprocess images with
  PIL, giving exactly the pixels timm's eval transform gives;
- `gpu_batches`: JPEG files read on the CPU and decoded on the GPU with
  torchvision's nvJPEG decoder, then resized and cropped on the GPU. Decoder
  and resampler differ from libjpeg and PIL in the last bit of some pixels,
  so this path is a choice (`analysis.decode: gpu`), never a silent default.
"""

from __future__ import annotations

import warnings
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .preprocessing import Preprocessing

JPEG_SUFFIXES = (".jpg", ".jpeg")


class PreprocessedImages(Dataset):
    """Image i of a source's selection, preprocessed: uint8 (c, H', W')."""

    def __init__(self, source, root: Path | None, preprocessing: Preprocessing):
        self.source = source
        self.root = root
        self.preprocessing = preprocessing
        self.indices = source.indices(root)

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
                batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Preprocessed images in the source's order, decoded by `workers` processes (0: in this one)."""
    loader = DataLoader(PreprocessedImages(source, root, preprocessing), batch_size=batch_size,
                        num_workers=workers, collate_fn=_stack_in_worker, persistent_workers=False,
                        prefetch_factor=4 if workers else None)
    for groups in loader:
        yield from groups


def gpu_resize_and_crop(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """The geometric preprocessing of one (c, H, W) uint8 image on its own device."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if preprocessing.resize:
        image = F.resize(image, preprocessing.resize, antialias=True,
                         interpolation=InterpolationMode(preprocessing.interpolation))
    if preprocessing.crop:
        image = F.center_crop(image, preprocessing.crop)
    return image


def gpu_batches(paths: list[Path], preprocessing: Preprocessing, batch_size: int = 256,
                device: str = "cuda", readers: int = 8) -> Iterator[torch.Tensor]:
    """JPEG files decoded on the GPU in batches; the bytes are read by a thread pool meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    non_jpeg = [p for p in paths if Path(p).suffix.lower() not in JPEG_SUFFIXES]
    if non_jpeg:
        raise ValueError(f"GPU decoding reads JPEG files only; {non_jpeg[0]} is not one: set analysis.decode: cpu")
    # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec, once per call; say it once.
    warnings.filterwarnings("once", category=DeprecationWarning, module="torchvision.io.image")
    mode = ImageReadMode.GRAY if preprocessing.in_chans == 1 else ImageReadMode.RGB
    chunks = iter([paths[i:i + batch_size] for i in range(0, len(paths), batch_size)])
    with ThreadPoolExecutor(readers) as pool:
        # At most `readers` chunks of encoded bytes are held ahead of the decoder: bounded memory.
        pending = deque(pool.submit(_read_all, chunk, read_file) for chunk in islice(chunks, readers))
        while pending:
            encoded = pending.popleft().result()
            pending.extend(pool.submit(_read_all, chunk, read_file) for chunk in islice(chunks, 1))
            decoded = decode_jpeg(encoded, mode=mode, device=device)
            images = [gpu_resize_and_crop(image, preprocessing) for image in decoded]
            yield from (torch.stack(group) for group in _equal_shape_runs(images))


def _read_all(paths: list[Path], read_file) -> list[torch.Tensor]:
    return [read_file(str(path)) for path in paths]


def _equal_shape_runs(images: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    run: list[torch.Tensor] = []
    for image in images:
        if run and image.shape != run[0].shape:
            yield run
            run = []
        run.append(image)
    if run:
        yield run
