"""Exact patch statistics: mean, covariance and PCA basis of every k x k patch.

Images reach the engine as uint8 (after the geometric part of preprocessing),
so every patch coordinate is v_j in 0..255 and the normalised value is the
affine x_j = a_j v_j + b_j. The engine accumulates the integer sums of v and of
v v^T *exactly* and applies the affine map once at the end:
- on the CPU, float32 GEMMs over chunks of 1,024 patches of v - 128 are exact
  (each product is at most 2^14, each chunk sum at most 2^24) and are summed in
  float64, which stays exact below 2^53;
- on a GPU, the GEMM runs in float64, exact for the same reason.
The covariance n*S2 - S1 S1^T is then formed in Python integers, so the only
rounding in the whole computation is the final conversion to float64.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .basis import PatchBasis, affine_normalisation, eigendecomposition

EXACT_FLOAT32_CHUNK = 1024
PIXEL_OFFSET = 128
# Patches formed at once; bounds memory at about 300 MB of float32 at p=147.
PATCHES_PER_STEP = 1 << 19


def patch_dimension(kernel_size: int, in_chans: int) -> int:
    return in_chans * kernel_size * kernel_size


def extract_patches(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """All stride-1 patches of (N, c, H, W) images as rows in conv-weight order (c, kh, kw)."""
    n, c, _, _ = images.shape
    windows = images.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel_size * kernel_size)


class PatchMoments:
    """Streaming exact first and second moments of uint8 image patches."""

    def __init__(self, kernel_size: int, in_chans: int, device: str | torch.device = "cpu"):
        self.kernel_size = kernel_size
        self.in_chans = in_chans
        self.device = torch.device(device)
        p = patch_dimension(kernel_size, in_chans)
        self.n_patches = 0
        self.n_images = 0
        self._sum = torch.zeros(p, dtype=torch.int64, device=self.device)
        self._outer = torch.zeros(p, p, dtype=torch.float64, device=self.device)

    def update(self, images: torch.Tensor) -> None:
        """Add a batch of same-sized uint8 images of shape (N, c, H, W)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"patch statistics take uint8 images, got {images.dtype}")
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (N, {self.in_chans}, H, W), got {tuple(images.shape)}"
            )
        _, _, height, width = images.shape
        k = self.kernel_size
        if height < k or width < k:
            raise ValueError(f"image of {height}x{width} pixels is smaller than a {k}x{k} patch")
        per_image = (height - k + 1) * (width - k + 1)
        step = max(1, PATCHES_PER_STEP // per_image)
        for batch in images.split(step):
            self._accumulate(batch.to(self.device, non_blocking=True))
        self.n_images += images.shape[0]

    def _accumulate(self, batch: torch.Tensor) -> None:
        exact_dtype = torch.float32 if self.device.type == "cpu" else torch.float64
        centred = batch.to(exact_dtype) - PIXEL_OFFSET
        patches = extract_patches(centred, self.kernel_size)
        self.n_patches += patches.shape[0]
        self._sum += patches.sum(0, dtype=torch.float64).round().to(torch.int64)
        if exact_dtype == torch.float64:
            self._outer += patches.T @ patches
            return
        whole = patches.shape[0] // EXACT_FLOAT32_CHUNK * EXACT_FLOAT32_CHUNK
        if whole:
            chunks = patches[:whole].reshape(-1, EXACT_FLOAT32_CHUNK, patches.shape[1])
            self._outer += torch.bmm(chunks.transpose(1, 2), chunks).sum(0, dtype=torch.float64)
        rest = patches[whole:]
        if rest.shape[0]:
            self._outer += (rest.T @ rest).to(torch.float64)

    def pixel_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of raw 0..255 patch values, from exact integer sums."""
        if self.n_patches == 0:
            raise ValueError("no patches were accumulated")
        n = self.n_patches
        sums = [int(v) for v in self._sum.cpu().numpy()]
        outer = self._outer.cpu().numpy().astype(np.int64).astype(object)
        centred_outer = outer * n - np.outer(np.array(sums, dtype=object), np.array(sums, dtype=object))
        covariance = (centred_outer.astype(np.float64)) / float(n) / float(n)
        mean = np.array(sums, dtype=np.float64) / n + PIXEL_OFFSET
        return mean, covariance


def basis_from_moments(moments: PatchMoments, mean: Iterable[float], std: Iterable[float],
                       meta: dict | None = None) -> PatchBasis:
    pixel_mean, pixel_covariance = moments.pixel_covariance()
    scale, offset = affine_normalisation(moments.kernel_size, mean, std)
    covariance = pixel_covariance * np.outer(scale, scale)
    eigenvalues, eigenvectors = eigendecomposition(covariance)
    return PatchBasis(
        kernel_size=moments.kernel_size,
        in_chans=moments.in_chans,
        mean=pixel_mean * scale + offset,
        covariance=covariance,
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        n_patches=moments.n_patches,
        n_images=moments.n_images,
        meta=dict(meta or {}),
    )


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def same_size_batches(images: Iterable[np.ndarray], max_batch: int = 256) -> Iterator[np.ndarray]:
    """Stack consecutive images of equal shape, so whole batches go through one GEMM."""
    batch: list[np.ndarray] = []
    for image in images:
        if batch and (image.shape != batch[0].shape or len(batch) == max_batch):
            yield np.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield np.stack(batch)


def dataset_basis(images: Iterable[np.ndarray], preprocessing, kernel_size: int,
                  device: str | None = None, total: int | None = None,
                  progress: bool = True, meta: dict | None = None) -> PatchBasis:
    """Exact patch basis of a stream of raw uint8 images under one preprocessing."""
    moments = PatchMoments(kernel_size, preprocessing.in_chans, device or default_device())
    prepared = (preprocessing.apply(image) for image in
                tqdm(images, total=total, desc=f"patch statistics k={kernel_size}",
                     unit="img", disable=not progress, mininterval=2))
    for batch in same_size_batches(prepared):
        moments.update(torch.from_numpy(batch))
    return basis_from_moments(moments, preprocessing.mean, preprocessing.std,
                              meta={**(meta or {}), "device": str(moments.device),
                                    "preprocessing": preprocessing.to_dict()})
