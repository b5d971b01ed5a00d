"""What a patch-statistics engine hands back for one batch of same-sized images: exact integer sums.

Pixels enter as v - 128 (v the uint8 value), so every product is at most 2^14 in size. An engine
computes, in float64 tensors holding integers:
- `first`: the sum over every patch of each patch coordinate, p = c*k*k of them in the order of a
  PyTorch conv weight (channel, row, column);
- `outer`: the p x p sum of each patch times itself transposed;
- for each offset d and direction (rows: the second patch d pixels to the right; columns: d pixels
  below), the sums over every pair of patches whose origins lie d apart (`PairSums`), in the same
  coordinate order, or None where the images are too small for the offset.
Two engines compute them (patch_gram, lag_products); the sums are identical, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PIXEL_OFFSET = 128
# Pairs of patches at an offset: along each row, and along each column.
DIRECTIONS = ("rows", "columns")
# A float32 GEMM is exact while each output sums at most 1,024 products of centred pixels: 2^10 * 2^14 = 2^24.
EXACT_FLOAT32_TERMS = 1024


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


@dataclass
class BatchSums:
    """One batch's exact sums (see the module docstring); pairs[direction][i] is at the i-th offset."""

    first: torch.Tensor
    outer: torch.Tensor
    pairs: dict[str, list[PairSums | None]]
    n_patches: int


def centred(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return images.to(dtype) - PIXEL_OFFSET


def pixel_prefix_sums(images: torch.Tensor) -> torch.Tensor:
    """(c, H + 1, W + 1) int64: Q[c, y, x] = sum over the batch and over rows < y, columns < x of v - 128."""
    n = images.shape[0]
    # Over a flat view into int32 where it cannot overflow: four times faster than torch's strided sum into int64.
    exact = torch.int32 if n * 255 < 2**31 else torch.int64
    total = images.reshape(n, -1).sum(0, dtype=exact).reshape(images.shape[1:]).to(torch.int64) - PIXEL_OFFSET * n
    return torch.nn.functional.pad(total.cumsum(1).cumsum(2), (1, 0, 1, 0))


def window_sums(prefix: torch.Tensor, kernel_size: int, rows: int, columns: int,
                shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Per patch coordinate (c, a_y, a_x), the sum of v - 128 at o + a + shift, over origins o in
    [0, rows) x [0, columns).

    `prefix` from pixel_prefix_sums; float64, in conv-weight order.
    """
    k = kernel_size
    top = torch.arange(k, device=prefix.device) + shift[0]
    left = torch.arange(k, device=prefix.device) + shift[1]
    y0, y1 = top[:, None], top[:, None] + rows
    x0, x1 = left[None, :], left[None, :] + columns
    sums = prefix[:, y1, x1] - prefix[:, y0, x1] - prefix[:, y1, x0] + prefix[:, y0, x0]
    return sums.reshape(-1).to(torch.float64)


def row_grams(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per batch item, a @ b^T over the last dimension: (B, p, L), (B, q, L) -> (B, p, q), exact.

    float64 inputs are exact as they are (every sum is far below 2^53). float32 products are exact while
    L <= EXACT_FLOAT32_TERMS, and returned as float32; longer rows are cut into such chunks, whose
    products are added in float64.
    """
    length = a.shape[2]
    if a.dtype == torch.float64 or length <= EXACT_FLOAT32_TERMS:
        return torch.bmm(a, b.transpose(1, 2))
    total = None
    for start in range(0, length, EXACT_FLOAT32_TERMS):
        stop = min(length, start + EXACT_FLOAT32_TERMS)
        part = torch.bmm(a[:, :, start:stop], b[:, :, start:stop].transpose(1, 2))
        total = part.to(torch.float64) if total is None else total + part
    return total


def band_gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum over images, rows and columns of a @ b^T: (N, p, R, L), (N, q, R, L) -> (p, q) float64, exactly.

    Rows go in bands of at most EXACT_FLOAT32_TERMS products each (views: no copy of the rows), one
    GEMM a band, and the bands' products are added in float64.
    """
    n, p, rows, length = a.shape
    per_band = max(1, EXACT_FLOAT32_TERMS // length) if a.dtype != torch.float64 else rows
    full = rows // per_band * per_band
    total = torch.zeros(p, b.shape[1], dtype=torch.float64, device=a.device)
    for image in range(n):
        if full:
            first = a[image, :, :full].reshape(p, -1, per_band * length).transpose(0, 1)
            second = b[image, :, :full].reshape(b.shape[1], -1, per_band * length).transpose(0, 1)
            total += row_grams(first, second).sum(0, dtype=torch.float64)
        if full < rows:
            first = a[image, :, full:].reshape(1, p, -1)
            second = b[image, :, full:].reshape(1, b.shape[1], -1)
            total += row_grams(first, second).sum(0, dtype=torch.float64)
    return total
