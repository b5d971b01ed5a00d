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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .basis import MOMENTS, PatchBasis, affine_normalisation, eigendecomposition
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


# Pairs of patches at an offset: along each row (images as given), along each column (images transposed).
DIRECTIONS = ("rows", "columns")


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


@dataclass
class PairSums:
    """Exact sums over pairs of patches whose origins lie a fixed offset apart along one direction.

    first/second: sums of v - 128 of the first and of the second patch of each pair;
    outer: sum of first (v - 128) times second (v - 128)^T; count: pairs summed.
    """

    first: torch.Tensor
    second: torch.Tensor
    outer: torch.Tensor
    count: int

    @classmethod
    def zeros(cls, dimension: int, device: torch.device) -> "PairSums":
        return cls(torch.zeros(dimension, dtype=torch.float64, device=device),
                   torch.zeros(dimension, dtype=torch.float64, device=device),
                   torch.zeros(dimension, dimension, dtype=torch.float64, device=device), 0)

    def add(self, other: "PairSums") -> None:
        self.first += other.first
        self.second += other.second
        self.outer += other.outer
        self.count += other.count

    def sums(self) -> list[tuple[torch.Tensor, int]]:
        return [(self.first, self.count), (self.second, self.count), (self.outer, self.count)]


def pair_sums(columns: torch.Tensor, rows: int, out_width: int, offsets: tuple[int, ...]) -> list[PairSums | None]:
    """Exact sums over the pairs of patches (x, x + d) in each row of patch columns (N, p, rows*out_width).

    For each offset d the GEMM runs on the flat column layout shifted by d, which
    needs no copy but also pairs each row's last d patches with the next row's
    first ones; those wrapped pairs are summed separately and taken out. None:
    the rows are too short for the offset.
    """
    n, p, length = columns.shape
    grid = columns.view(n, p, rows, out_width)
    # Per position along the row, summed over rows (exact in float32: at most 128 * 1024 there), then over items.
    along_row = grid.sum(2).sum(0, dtype=torch.float64)
    found = []
    for offset in offsets:
        if offset >= out_width:
            found.append(None)
            continue
        outer = torch.bmm(columns[:, :, :length - offset],
                          columns[:, :, offset:].transpose(1, 2)).sum(0, dtype=torch.float64)
        if rows > 1:
            wrapped_first = grid[:, :, :-1, out_width - offset:].reshape(n, p, -1)
            wrapped_second = grid[:, :, 1:, :offset].reshape(n, p, -1)
            outer -= torch.bmm(wrapped_first, wrapped_second.transpose(1, 2)).sum(0, dtype=torch.float64)
        found.append(PairSums(first=along_row[:, :out_width - offset].sum(1), second=along_row[:, offset:].sum(1),
                              outer=outer, count=n * rows * (out_width - offset)))
    return found


def exact_centred(outer: torch.Tensor, first: torch.Tensor, second: torch.Tensor, count: int) -> np.ndarray:
    """(count * outer - first second^T) / count^2 from checked integer sums, in Python integers: no cancellation."""
    # Checked before: integers below 2^53, so the int64 casts are exact.
    outer = outer.cpu().numpy().astype(np.int64).astype(object)
    first = first.cpu().numpy().astype(np.int64).astype(object)
    second = second.cpu().numpy().astype(np.int64).astype(object)
    return (outer * count - np.outer(first, second)).astype(np.float64) / float(count) / float(count)


class PatchMoments:
    """Streaming exact first and second moments of uint8 image patches, and cross-moments at offsets."""

    def __init__(self, kernel_size: int, in_chans: int, device: str | torch.device = "cpu", threads: int = 1,
                 name: str = "images", offsets: Iterable[int] = ()):
        """threads > 1 (CPU): batches run concurrently in that many Python threads.

        Each torch op then works on one batch; set torch.set_num_threads(1) so that
        they do not also split it, since many small ops parallelise poorly within.
        `name` says what the images are (e.g. the dataset) in error messages.
        `offsets`: pixel distances d at which the cross-moments of patch pairs
        (origins d apart along a row, and along a column) are accumulated too.
        """
        self.name = name
        self.kernel_size = kernel_size
        self.in_chans = in_chans
        self.offsets = tuple(int(d) for d in offsets)
        if any(d < 1 for d in self.offsets):
            raise ValueError(f"offsets must be positive pixel distances, got {self.offsets}")
        self.device = torch.device(device)
        self._pool = ThreadPoolExecutor(threads) if self.device.type == "cpu" and threads > 1 else None
        p = patch_dimension(kernel_size, in_chans)
        self.n_patches = 0
        self.n_images = 0
        self._sum = torch.zeros(p, dtype=torch.float64, device=self.device)
        self._outer = torch.zeros(p, p, dtype=torch.float64, device=self.device)
        # Pairs along rows are summed over the images as they come; pairs along columns over the
        # transposed images, whose patch coordinates come in (c, kw, kh) order until the end.
        self._pairs = {direction: [PairSums.zeros(p, self.device) for _ in self.offsets] for direction in DIRECTIONS}
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
        images = images.to(self.device, non_blocking=True)
        jobs = [(item, dtype, False) for item, dtype in self._items(images)]
        if self.offsets:
            jobs += [(item, dtype, True) for item, dtype in self._items(images.transpose(2, 3))]
        results = (self._pool.map(self._moments, *zip(*jobs)) if self._pool
                   else (self._moments(*job) for job in jobs))
        p = self._sum.shape[0]
        batch_sum, batch_outer = torch.zeros_like(self._sum), torch.zeros_like(self._outer)
        batch_pairs = {direction: [PairSums.zeros(p, self.device) for _ in self.offsets] for direction in DIRECTIONS}
        for (_, _, transposed), (sums, outer, pairs) in zip(jobs, results):
            if not transposed:
                batch_sum += sums
                batch_outer += outer
            for total, part in zip(batch_pairs[DIRECTIONS[transposed]], pairs):
                if part is not None:
                    total.add(part)
        n_patches = images.shape[0] * (height - k + 1) * (width - k + 1)
        self._record_faults(len(self._batch_starts), [(batch_sum, n_patches), (batch_outer, n_patches)]
                            + [s for direction in DIRECTIONS for pair in batch_pairs[direction] for s in pair.sums()])
        self._batch_starts.append(self.n_images)
        self._sum += batch_sum
        self._outer += batch_outer
        for direction in DIRECTIONS:
            for total, part in zip(self._pairs[direction], batch_pairs[direction]):
                total.add(part)
        self.n_images += images.shape[0]
        self.n_patches += n_patches

    def _items(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.dtype]]:
        """The images cut into row bands and groups of bands small enough for one batched GEMM each."""
        k = self.kernel_size
        out_width = images.shape[3] - k + 1
        on_cpu = self.device.type == "cpu"
        dtype = torch.float32 if on_cpu and out_width <= EXACT_FLOAT32_PATCHES else torch.float64
        band_rows = max(1, (EXACT_FLOAT32_PATCHES if on_cpu else GPU_BAND_PATCHES) // out_width)
        items = []
        for bands in row_bands(images, k, band_rows):
            per_item = (bands.shape[2] - k + 1) * out_width
            step = max(1, COLUMN_BYTES[self.device.type if on_cpu else "cuda"]
                       // (patch_dimension(k, self.in_chans) * per_item * dtype.itemsize))
            items += [(group, dtype) for group in bands.split(step)]
        return items

    def _record_faults(self, batch: int, sums: list[tuple[torch.Tensor, int]]) -> None:
        """Note, on the device, the first batch whose (sums, terms summed) are not what exact sums can be.

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
        totals = [("first-moment sums", self._sum), ("outer-product sums", self._outer)]
        for direction in DIRECTIONS:
            for offset, pair in zip(self.offsets, self._pairs[direction]):
                totals += [(f"pair sums at {offset} px along {direction}", values)
                           for values in (pair.first, pair.second, pair.outer)]
        return totals

    def _moments(self, batch: torch.Tensor, dtype: torch.dtype, transposed: bool
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[PairSums | None]]:
        """Exact float64 sums of one batch's patches, of their outer products and of each offset's pairs.

        A transposed batch only adds its pairs (they run along the images' columns).
        """
        columns = patch_columns(batch, self.kernel_size, dtype)
        rows, out_width = batch.shape[2] - self.kernel_size + 1, batch.shape[3] - self.kernel_size + 1
        pairs = pair_sums(columns, rows, out_width, self.offsets) if self.offsets else []
        if transposed:
            return None, None, pairs
        return (window_sums(batch, self.kernel_size),
                torch.bmm(columns, columns.transpose(1, 2)).sum(0, dtype=torch.float64), pairs)

    def pixel_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of raw 0..255 patch values, from exact integer sums."""
        if self.n_patches == 0:
            raise ValueError("no patches were accumulated")
        self.check_sums()
        mean = self._sum.cpu().numpy() / self.n_patches + PIXEL_OFFSET
        return mean, exact_centred(self._outer, self._sum, self._sum, self.n_patches)

    def pixel_cross_covariances(self) -> np.ndarray:
        """(offsets, p, p): cross-covariance of raw patch values at origins d pixels apart, for each offset d.

        C(d) = E[(x_a - E x_a)(x_b - E x_b)^T] over every pair (a, b) of patch origins
        d apart along a row, and separately along a column; the two are averaged
        (over the directions that have pairs) and symmetrised, since only w^T C(d) w
        is ever used. NaN where no image is large enough for the offset.
        """
        if self.n_patches == 0:
            raise ValueError("no patches were accumulated")
        self.check_sums()
        p = self._sum.shape[0]
        k = self.kernel_size
        # Transposed images list a patch's coordinates as (c, kw, kh): back to (c, kh, kw).
        order = np.arange(p).reshape(self.in_chans, k, k).transpose(0, 2, 1).reshape(-1)
        result = np.full((len(self.offsets), p, p), np.nan)
        for i in range(len(self.offsets)):
            found = []
            for direction in DIRECTIONS:
                pair = self._pairs[direction][i]
                if pair.count:
                    cross = exact_centred(pair.outer, pair.first, pair.second, pair.count)
                    found.append(cross[np.ix_(order, order)] if direction == "columns" else cross)
            if found:
                mean = sum(found) / len(found)
                result[i] = (mean + mean.T) / 2
        return result


def basis_from_moments(moments: PatchMoments, mean: Iterable[float], std: Iterable[float],
                       meta: dict | None = None, second_moment: str = "centred") -> PatchBasis:
    """The basis of the normalised patches' covariance, or of their uncentred second moment (same sums)."""
    if second_moment not in MOMENTS:
        raise ValueError(f"second_moment must be one of {MOMENTS}, got {second_moment!r}")
    pixel_mean, pixel_covariance = moments.pixel_covariance()
    scale, offset = affine_normalisation(moments.kernel_size, mean, std)
    scales = np.outer(scale, scale)
    covariance = pixel_covariance * scales
    normalised_mean = pixel_mean * scale + offset
    decomposed = covariance if second_moment == "centred" else covariance + np.outer(normalised_mean, normalised_mean)
    eigenvalues, eigenvectors = eigendecomposition(decomposed)
    p = covariance.shape[0]
    return PatchBasis(
        kernel_size=moments.kernel_size,
        in_chans=moments.in_chans,
        mean=normalised_mean,
        covariance=covariance,
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        n_patches=moments.n_patches,
        n_images=moments.n_images,
        meta=dict(meta or {}),
        moments=second_moment,
        offsets=np.array(moments.offsets, dtype=np.int64),
        cross_covariances=(moments.pixel_cross_covariances() * scales if moments.offsets
                           else np.zeros((0, p, p))),
    )


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def basis_from_batches(batches: Iterable[torch.Tensor], preprocessing: Preprocessing, kernel_size: int,
                       device: str | None = None, total: int | None = None, progress: bool = True,
                       meta: dict | None = None, threads: int = 1, name: str = "images",
                       offsets: Iterable[int] = (), second_moment: str = "centred") -> PatchBasis:
    """Exact patch basis of a stream of preprocessed uint8 (N, c, H, W) batches (`name`: what they are).

    offsets: pixel distances at which patch cross-covariances C(d) are measured in the same pass.
    """
    moments = PatchMoments(kernel_size, preprocessing.in_chans, device or default_device(), threads=threads,
                           name=name, offsets=offsets)
    with tqdm(total=total, desc=f"patch statistics k={kernel_size}", unit="img",
              disable=not progress, mininterval=2) as bar:
        for batch in batches:
            moments.update(batch)
            bar.update(batch.shape[0])
    return basis_from_moments(moments, preprocessing.mean, preprocessing.std,
                              meta={**(meta or {}), "device": str(moments.device),
                                    "preprocessing": preprocessing.to_dict()},
                              second_moment=second_moment)


def dataset_basis(images: Iterable[np.ndarray], preprocessing: Preprocessing, kernel_size: int,
                  device: str | None = None, total: int | None = None,
                  progress: bool = True, meta: dict | None = None,
                  offsets: Iterable[int] = (), second_moment: str = "centred") -> PatchBasis:
    """Exact patch basis of a stream of raw uint8 images under one preprocessing."""
    prepared = same_size_batches(preprocessing.apply(image) for image in images)
    return basis_from_batches((torch.from_numpy(batch) for batch in prepared), preprocessing, kernel_size,
                              device=device, total=total, progress=progress, meta=meta,
                              offsets=offsets, second_moment=second_moment)


def source_basis(source, root: Path | None, preprocessing: Preprocessing, kernel_size: int,
                 device: str | None = None, workers: int = 0,
                 progress: bool = True, meta: dict | None = None, threads: int = 1,
                 offsets: Iterable[int] = (), second_moment: str = "centred",
                 indices: np.ndarray | None = None) -> PatchBasis:
    """Exact patch basis of a dataset source's images `indices` (None: its selection; see prepared_indices).

    Images are loaded and preprocessed with PIL in `workers` DataLoader
    processes: timm's exact pixels.
    """
    device = device or default_device()
    indices = source.indices(root) if indices is None else indices
    batches = cpu_batches(source, root, preprocessing, workers=workers, indices=indices, kernel_size=kernel_size)
    meta = {**(meta or {}), "subsample": source.subsample}
    return basis_from_batches(batches, preprocessing, kernel_size, device=device, total=len(indices),
                              progress=progress, meta=meta, threads=threads, name=f"dataset {source.name!r}",
                              offsets=offsets, second_moment=second_moment)
