"""Exact patch statistics: mean, covariance and PCA basis of every k x k patch.

Images reach the engine as uint8 (after the geometric part of preprocessing),
so every patch coordinate is v_j in 0..255 and the normalised value is the
affine x_j = a_j v_j + b_j. The engine accumulates the integer sums of v - 128
and of (v - 128)(v - 128)^T *exactly* and applies the affine map once at the end.

The dataset's patch matrix is never formed. Patches are built a few images
(or row bands of images) at a time, by k*k slice copies into the (N, p, L)
layout a batched GEMM reads directly, which streams memory far better than
unfold's gather; each batch's Gram matrix is added to the running sums, so
memory stays bounded whatever the number of images.
- On the CPU, images are cut into row bands of at most 1,024 patches and the
  GEMMs run in float32, exact (each product is at most 2^14, each per-band
  sum at most 2^24); the per-band sums are added in float64, exact below 2^53.
- On a GPU (and for images wider than 1,024 patches) they run in float64,
  exact for the same reason up to 2^39 patches per band.
The covariance n*S2 - S1 S1^T is then formed in Python integers, so the only
rounding in the whole computation is the final conversion to float64.

Exactness is checked, not assumed: each batch's sums must be finite integers
no larger than its patch count allows, and the totals must stay inside
float64's exact range, or nothing is derived from them (`InvalidMomentsError`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .basis import PatchBasis, affine_normalisation, eigendecomposition
from .loaders import cpu_batches, same_size_batches
from .preprocessing import Preprocessing

EXACT_FLOAT32_PATCHES = 1024
# Patches per batched-GEMM item on a GPU: images are cut into row bands of about
# this many patches so that the GEMM batch is wide enough to fill the device.
GPU_BAND_PATCHES = 8192
PIXEL_OFFSET = 128
# Bytes of patch columns formed at once: small enough to stay in cache on a CPU,
# large enough to keep a GPU busy. Memory stays bounded whatever the dataset size.
COLUMN_BYTES = {"cpu": 4 << 20, "cuda": 1 << 30}
# Integers up to 2^53 are exact in float64; every accumulated sum must stay below.
EXACT_FLOAT64 = 2**53
# v - 128 lies in -128..127: a sum over n patches is at most 128 n, a sum of products at most 128^2 n.
LARGEST_CENTRED_PIXEL = 128
FAULTS = {1: "non-finite values (NaN or Inf)", 2: "non-integral values",
          4: "values larger than its patches' uint8 pixels can sum to"}


class InvalidMomentsError(ValueError):
    """Accumulated patch sums that cannot be exact; no basis may be derived from them."""


def patch_dimension(kernel_size: int, in_chans: int) -> int:
    return in_chans * kernel_size * kernel_size


def patch_columns(images: torch.Tensor, kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, c, H, W) uint8 -> (N, c*k*k, H'*W'): each image's patches of v - 128 as columns.

    Built by k*k slice copies of whole images, which streams memory far better
    than unfold's gather: the layout is the one a batched GEMM reads directly.
    """
    n, c, height, width = images.shape
    k = kernel_size
    out_height, out_width = height - k + 1, width - k + 1
    centred = images.to(dtype) - PIXEL_OFFSET
    columns = torch.empty(n, c, k, k, out_height, out_width, dtype=dtype, device=images.device)
    for dy in range(k):
        for dx in range(k):
            columns[:, :, dy, dx] = centred[:, :, dy:dy + out_height, dx:dx + out_width]
    return columns.view(n, c * k * k, out_height * out_width)


def window_sums(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Sum of v - 128 over all patches, per patch coordinate (c, dy, dx), in float64.

    Coordinate (c, dy, dx) of every patch together covers one window of the
    pixel-wise sum over the batch, so this reads the images once instead of
    the k*k times larger patch columns.
    """
    n, c, height, width = images.shape
    k = kernel_size
    total = (images.sum(0, dtype=torch.int64) - PIXEL_OFFSET * n).to(torch.float64)
    windows = [total[:, dy:dy + height - k + 1, dx:dx + width - k + 1].sum((1, 2))
               for dy in range(k) for dx in range(k)]
    return torch.stack(windows, 1).reshape(-1)


def row_bands(images: torch.Tensor, kernel_size: int, band_rows: int) -> Iterator[torch.Tensor]:
    """Cut (N, c, H, W) images into horizontal bands holding `band_rows` rows of patches each.

    Bands overlap by k-1 pixel rows, so every patch lies in exactly one band;
    full bands come stacked along the batch dimension, then the remainder.
    """
    n, c, height, width = images.shape
    out_height = height - kernel_size + 1
    if out_height <= band_rows:
        yield images
        return
    full = out_height // band_rows
    span = band_rows + kernel_size - 1
    stacked = images[:, :, :full * band_rows + kernel_size - 1].unfold(2, span, band_rows)
    yield stacked.permute(0, 2, 1, 4, 3).reshape(n * full, c, span, width)
    if out_height > full * band_rows:
        yield images[:, :, full * band_rows:]


class PatchMoments:
    """Streaming exact first and second moments of uint8 image patches."""

    def __init__(self, kernel_size: int, in_chans: int, device: str | torch.device = "cpu", threads: int = 1,
                 name: str = "images"):
        """threads > 1 (CPU): batches run concurrently in that many Python threads.

        Each torch op then works on one batch; set torch.set_num_threads(1) so that
        they do not also split it, since many small ops parallelise poorly within.
        `name` says what the images are (e.g. the dataset) in error messages.
        """
        self.name = name
        self.kernel_size = kernel_size
        self.in_chans = in_chans
        self.device = torch.device(device)
        self._pool = ThreadPoolExecutor(threads) if self.device.type == "cpu" and threads > 1 else None
        p = patch_dimension(kernel_size, in_chans)
        self.n_patches = 0
        self.n_images = 0
        self._sum = torch.zeros(p, dtype=torch.float64, device=self.device)
        self._outer = torch.zeros(p, p, dtype=torch.float64, device=self.device)
        # First image of each update() call, to name a faulty batch by the images it held.
        self._batch_starts: list[int] = []
        # (batch index, FAULTS bits) of the first invalid batch, -1 while none: kept on the device
        # so that checking a batch costs no synchronisation.
        self._first_fault = torch.full((2,), -1, dtype=torch.int64, device=self.device)

    def update(self, images: torch.Tensor) -> None:
        """Add a batch of same-sized uint8 images of shape (N, c, H, W), on any device."""
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
        out_width = width - k + 1
        on_cpu = self.device.type == "cpu"
        dtype = torch.float32 if on_cpu and out_width <= EXACT_FLOAT32_PATCHES else torch.float64
        band_rows = max(1, (EXACT_FLOAT32_PATCHES if on_cpu else GPU_BAND_PATCHES) // out_width)
        batches = []
        for bands in row_bands(images.to(self.device, non_blocking=True), k, band_rows):
            per_item = (bands.shape[2] - k + 1) * out_width
            step = max(1, COLUMN_BYTES[self.device.type if on_cpu else "cuda"]
                       // (patch_dimension(k, self.in_chans) * per_item * dtype.itemsize))
            batches += bands.split(step)
        moments = (self._pool.map(self._moments, batches, [dtype] * len(batches)) if self._pool
                   else (self._moments(batch, dtype) for batch in batches))
        batch_sum, batch_outer = torch.zeros_like(self._sum), torch.zeros_like(self._outer)
        for sums, outer in moments:
            batch_sum += sums
            batch_outer += outer
        n_patches = images.shape[0] * (height - k + 1) * out_width
        self._record_faults(len(self._batch_starts), [(batch_sum, n_patches), (batch_outer, n_patches)])
        self._batch_starts.append(self.n_images)
        self._sum += batch_sum
        self._outer += batch_outer
        self.n_images += images.shape[0]
        self.n_patches += n_patches

    def _record_faults(self, batch: int, sums: list[tuple[torch.Tensor, int]]) -> None:
        """Note, on the device, the first batch whose (sums, patches summed) are not what exact sums can be.

        A sum of first moments over n patches is at most 128 n in size, of products 128^2 n.
        """
        finite = integral = bounded = torch.ones((), dtype=torch.bool, device=self.device)
        for values, count in sums:
            largest = LARGEST_CENTRED_PIXEL ** (1 if values.ndim == 1 else 2) * count
            finite = finite & torch.isfinite(values).all()
            clean = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
            integral = integral & (clean == clean.round()).all()
            bounded = bounded & (clean.abs() <= largest).all()
        code = (~finite).long() | ((~integral).long() << 1) | ((~bounded).long() << 2)
        first = (self._first_fault[0] < 0) & (code > 0)
        self._first_fault = torch.where(first, torch.stack([torch.full_like(code, batch), code]), self._first_fault)

    def check_sums(self) -> None:
        """Raise InvalidMomentsError unless every batch and the totals are sums exact arithmetic can give."""
        batch, code = (int(v) for v in self._first_fault.cpu())
        if batch >= 0:
            first = self._batch_starts[batch]
            last = self._batch_starts[batch + 1] if batch + 1 < len(self._batch_starts) else self.n_images
            what = ", ".join(text for bit, text in FAULTS.items() if code & bit)
            raise InvalidMomentsError(
                f"{self.name}: batch {batch + 1} (images {first}..{last - 1} of the stream) gave invalid patch "
                f"sums: {what}; exact integer arithmetic cannot produce them, so the images were corrupted "
                "on their way in (or the device miscomputed); no basis is derived from them")
        if self.n_patches <= 0 or self.n_images <= 0 or self.n_patches < self.n_images:
            raise InvalidMomentsError(f"{self.name}: inconsistent counts: {self.n_patches} patches "
                                      f"from {self.n_images} images")
        for label, values in self._totals():
            values = values.cpu().numpy()
            if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
                raise InvalidMomentsError(f"{self.name}: accumulated {label} are not finite integers")
            if np.abs(values).max(initial=0) >= EXACT_FLOAT64:
                raise InvalidMomentsError(
                    f"{self.name}: accumulated {label} reach {np.abs(values).max():.3g}, beyond float64's exact "
                    f"range 2^53, after {self.n_patches} patches: use fewer images (a subsample)")
        sums = np.array([int(v) for v in self._sum.cpu().numpy()], dtype=object)
        squares = np.array([int(v) for v in np.diag(self._outer.cpu().numpy())], dtype=object)
        if np.any(squares * self.n_patches < sums * sums):
            raise InvalidMomentsError(f"{self.name}: accumulated sums and sums of squares imply a negative "
                                      f"variance over {self.n_patches} patches: they do not belong together")

    def _totals(self) -> list[tuple[str, torch.Tensor]]:
        return [("first-moment sums", self._sum), ("outer-product sums", self._outer)]

    def _moments(self, batch: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact float64 sums of one batch's patches and of their outer products."""
        columns = patch_columns(batch, self.kernel_size, dtype)
        return (window_sums(batch, self.kernel_size),
                torch.bmm(columns, columns.transpose(1, 2)).sum(0, dtype=torch.float64))

    def pixel_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of raw 0..255 patch values, from exact integer sums."""
        if self.n_patches == 0:
            raise ValueError("no patches were accumulated")
        self.check_sums()
        n = self.n_patches
        sums = [int(v) for v in self._sum.cpu().numpy()]
        # Checked above: integers below 2^53, so the int64 cast is exact.
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


def basis_from_batches(batches: Iterable[torch.Tensor], preprocessing: Preprocessing, kernel_size: int,
                       device: str | None = None, total: int | None = None, progress: bool = True,
                       meta: dict | None = None, threads: int = 1, name: str = "images") -> PatchBasis:
    """Exact patch basis of a stream of preprocessed uint8 (N, c, H, W) batches (`name`: what they are)."""
    moments = PatchMoments(kernel_size, preprocessing.in_chans, device or default_device(), threads=threads,
                           name=name)
    with tqdm(total=total, desc=f"patch statistics k={kernel_size}", unit="img",
              disable=not progress, mininterval=2) as bar:
        for batch in batches:
            moments.update(batch)
            bar.update(batch.shape[0])
    return basis_from_moments(moments, preprocessing.mean, preprocessing.std,
                              meta={**(meta or {}), "device": str(moments.device),
                                    "preprocessing": preprocessing.to_dict()})


def dataset_basis(images: Iterable[np.ndarray], preprocessing: Preprocessing, kernel_size: int,
                  device: str | None = None, total: int | None = None,
                  progress: bool = True, meta: dict | None = None) -> PatchBasis:
    """Exact patch basis of a stream of raw uint8 images under one preprocessing."""
    prepared = same_size_batches(preprocessing.apply(image) for image in images)
    return basis_from_batches((torch.from_numpy(batch) for batch in prepared), preprocessing, kernel_size,
                              device=device, total=total, progress=progress, meta=meta)


def source_basis(source, root: Path | None, preprocessing: Preprocessing, kernel_size: int,
                 device: str | None = None, workers: int = 0,
                 progress: bool = True, meta: dict | None = None, threads: int = 1) -> PatchBasis:
    """Exact patch basis of a dataset source's selected images.

    Images are loaded and preprocessed with PIL in `workers` DataLoader
    processes: timm's exact pixels.
    """
    device = device or default_device()
    batches = cpu_batches(source, root, preprocessing, workers=workers)
    meta = {**(meta or {}), "subsample": source.subsample}
    return basis_from_batches(batches, preprocessing, kernel_size, device=device, total=len(source.indices(root)),
                              progress=progress, meta=meta, threads=threads, name=f"dataset {source.name!r}")
