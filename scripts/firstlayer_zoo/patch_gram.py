"""The `patches` engine: every patch formed as a column, its sums from batched Gram matrices.

Work per image grows with n_patches x p^2 (p = c*k*k): cheap and BLAS-friendly for small kernels
on small images (CIFAR's 3x3), hopeless at k = 32 (see lag_products for the engine that is not).

Patches are built a few images (or row bands of images) at a time, by k*k slice copies into the
(N, p, L) layout a batched GEMM reads directly, which streams memory far better than unfold's gather.
- On the CPU, images are cut into row bands of at most 1,024 patches and the GEMMs run in float32,
  exact (each product is at most 2^14, each per-band sum at most 2^24); the per-band sums are added
  in float64, exact below 2^53.
- On a GPU (and for images wider than 1,024 patches) they run in float64, exact for the same reason
  up to 2^39 patches per band.
Pairs of patches along columns are found as pairs along the rows of the transposed images, whose
patch coordinates come in (c, kw, kh) order; they are put back in (c, kh, kw) order per batch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch

from .moment_sums import (
    DIRECTIONS,
    EXACT_FLOAT32_TERMS,
    BatchSums,
    PairSums,
    centred,
    pixel_prefix_sums,
    window_sums,
)

# Patches per batched-GEMM item on a GPU: images are cut into row bands of about
# this many patches so that the GEMM batch is wide enough to fill the device.
GPU_BAND_PATCHES = 8192
# Bytes of patch columns formed at once: small enough to stay in cache on a CPU,
# large enough to keep a GPU busy. Memory stays bounded whatever the dataset size.
COLUMN_BYTES = {"cpu": 4 << 20, "cuda": 1 << 30}


def patch_columns(images: torch.Tensor, kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, c, H, W) uint8 -> (N, c*k*k, H'*W'): each image's patches of v - 128 as columns.

    Built by k*k slice copies of whole images: the layout a batched GEMM reads directly.
    """
    n, c, height, width = images.shape
    k = kernel_size
    out_height, out_width = height - k + 1, width - k + 1
    pixels = centred(images, dtype)
    columns = torch.empty(n, c, k, k, out_height, out_width, dtype=dtype, device=images.device)
    for dy in range(k):
        for dx in range(k):
            columns[:, :, dy, dx] = pixels[:, :, dy:dy + out_height, dx:dx + out_width]
    return columns.view(n, c * k * k, out_height * out_width)


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


class PatchGram:
    """The `patches` engine for one kernel size; `threads` > 1 (CPU) runs batch items in that many threads.

    Each torch op then works on one item; set torch.set_num_threads(1) so that they do not also split
    it, since many small ops parallelise poorly within.
    """

    name = "patches"

    def __init__(self, kernel_size: int, in_chans: int, offsets: tuple[int, ...], device: torch.device,
                 threads: int = 1):
        self.kernel_size = kernel_size
        self.in_chans = in_chans
        self.offsets = offsets
        self.device = device
        self._pool = ThreadPoolExecutor(threads) if device.type == "cpu" and threads > 1 else None
        k = kernel_size
        p = in_chans * k * k
        # Transposed images list a patch's coordinates as (c, kw, kh): this puts them back in (c, kh, kw).
        self._order = torch.arange(p, device=device).reshape(in_chans, k, k).transpose(1, 2).reshape(-1)
        self._totals = BatchSums(first=torch.zeros(p, dtype=torch.float64, device=device),
                                 outer=torch.zeros(p, p, dtype=torch.float64, device=device),
                                 pairs={direction: [PairSums.zeros(p, device) for _ in offsets]
                                        for direction in DIRECTIONS},
                                 n_patches=0)

    @staticmethod
    def cost(height: int, width: int, kernel_size: int, in_chans: int, offsets: tuple[int, ...]) -> float:
        """Work per image in multiply-adds: a p x p product per patch, and per pair at each offset and direction."""
        p = in_chans * kernel_size ** 2
        rows, columns = height - kernel_size + 1, width - kernel_size + 1
        pairs = sum(rows * max(0, columns - d) + columns * max(0, rows - d) for d in offsets)
        return float(p * p * (rows * columns + pairs))

    def add(self, images: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Add a batch of same-sized uint8 images; returns its sums with the products each entry summed."""
        batch = self._batch_sums(images)
        totals = self._totals
        totals.first += batch.first
        totals.outer += batch.outer
        totals.n_patches += batch.n_patches
        found = [(batch.first, batch.n_patches), (batch.outer, batch.n_patches)]
        for direction in DIRECTIONS:
            for total, part in zip(totals.pairs[direction], batch.pairs[direction]):
                if part is not None:
                    total.add(part)
                    found += part.sums()
        return found

    def totals(self) -> BatchSums:
        """Every sum so far (pairs at an offset no image had room for: None)."""
        totals = self._totals
        return BatchSums(first=totals.first, outer=totals.outer, n_patches=totals.n_patches,
                         pairs={direction: [pair if pair.count else None for pair in pairs]
                                for direction, pairs in totals.pairs.items()})

    def _batch_sums(self, images: torch.Tensor) -> BatchSums:
        jobs = [(item, dtype, False) for item, dtype in self._items(images)]
        if self.offsets:
            jobs += [(item, dtype, True) for item, dtype in self._items(images.transpose(2, 3))]
        results = (self._pool.map(self._item_sums, *zip(*jobs)) if self._pool
                   else (self._item_sums(*job) for job in jobs))
        p = self.in_chans * self.kernel_size ** 2
        outer = torch.zeros(p, p, dtype=torch.float64, device=self.device)
        pairs = {direction: [PairSums.zeros(p, self.device) for _ in self.offsets]
                 for direction in DIRECTIONS}
        found = {direction: [False] * len(self.offsets) for direction in DIRECTIONS}
        for (_, _, transposed), (item_outer, item_pairs) in zip(jobs, results):
            if not transposed:
                outer += item_outer
            direction = DIRECTIONS[transposed]
            for i, part in enumerate(item_pairs):
                if part is not None:
                    pairs[direction][i].add(part)
                    found[direction][i] = True
        for i in range(len(self.offsets)):
            columns = pairs["columns"][i]
            order = self._order
            pairs["columns"][i] = PairSums(columns.first[order], columns.second[order],
                                           columns.outer[order][:, order], columns.count)
        k = self.kernel_size
        _, _, height, width = images.shape
        return BatchSums(
            first=window_sums(pixel_prefix_sums(images), k, height - k + 1, width - k + 1),
            outer=outer,
            pairs={direction: [pair if found[direction][i] else None for i, pair in enumerate(pairs[direction])]
                   for direction in DIRECTIONS},
            n_patches=images.shape[0] * (height - k + 1) * (width - k + 1),
        )

    def _items(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.dtype]]:
        """The images cut into row bands and groups of bands small enough for one batched GEMM each."""
        k = self.kernel_size
        out_width = images.shape[3] - k + 1
        on_cpu = self.device.type == "cpu"
        dtype = torch.float32 if on_cpu and out_width <= EXACT_FLOAT32_TERMS else torch.float64
        band_rows = max(1, (EXACT_FLOAT32_TERMS if on_cpu else GPU_BAND_PATCHES) // out_width)
        items = []
        for bands in row_bands(images, k, band_rows):
            per_item = (bands.shape[2] - k + 1) * out_width
            step = max(1, COLUMN_BYTES[self.device.type if on_cpu else "cuda"]
                       // (self.in_chans * k * k * per_item * dtype.itemsize))
            items += [(group, dtype) for group in bands.split(step)]
        return items

    def _item_sums(self, batch: torch.Tensor, dtype: torch.dtype, transposed: bool
                   ) -> tuple[torch.Tensor | None, list[PairSums | None]]:
        """One item's sum of outer products (None for a transposed item: it only adds its pairs), and its pairs."""
        columns = patch_columns(batch, self.kernel_size, dtype)
        rows, out_width = batch.shape[2] - self.kernel_size + 1, batch.shape[3] - self.kernel_size + 1
        pairs = pair_sums(columns, rows, out_width, self.offsets) if self.offsets else []
        if transposed:
            return None, pairs
        return torch.bmm(columns, columns.transpose(1, 2)).sum(0, dtype=torch.float64), pairs
