"""The `lags` engine: patch sums from products of row segments at each row lag, never forming a patch.

Take one image of centred pixels v_c(y, x), kernel k, valid origins o in [0, ny) x [0, nx). The sum
over patches of the product of coordinates (c, a) and (c', b) is

    S[(c,a),(c',b)] = sum_o v_c(o + a) v_c'(o + b) = sum over rows i in [a_y, a_y + ny) of T_ly(i)[(a_x,c),(b_x,c')]

with ly = b_y - a_y and T_ly(i) = sum_x h(i, x) h(i + ly, x)^T, where h(i, x) holds the pixels
v_c(i, x + s) of row i for s in [0, w): a row segment of width w. So each row lag costs one small
Gram matrix per image row (exact float32 GEMMs over at most 1,024 columns on the CPU, float64 on a
GPU), prefix sums over the rows turn it into every row window at once, and the p x p sums are read
off in blocks. Work per image: about (k + d) H W (c w)^2 multiply-adds, against n_patches p^2 for the
`patches` engine (k = 32 at 224 pixels: 1e10 against 3.5e11), and memory stays at a few row lags'
Gram matrices, never every patch.

Cross sums at an offset d reuse the same products: pairs along a row read entries (a_x, b_x + d) of
segments of width w = k + d (over d fewer columns, whose difference is a short tail GEMM), and pairs
along a column read the row lags d + b_y - a_y, all but d of them the basis' own. Negative row lags
are the transposes of positive ones.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch

from .moment_sums import (
    DIRECTIONS,
    BatchSums,
    PairSums,
    centred,
    band_gram,
    row_grams,
    pixel_prefix_sums,
    window_sums,
)

# Bytes of row segments formed at once (in both layouts, see _Geometry.segments); a batch of larger images is
# taken a few images at a time.
SEGMENT_BYTES = 512 << 20
# What one small GEMM of an edge row costs beyond its multiply-adds (call and float64 bookkeeping),
# in multiply-adds: about 8 us at 1e10 multiply-adds a second on the development machine.
ITEM_COST = 80_000


class LagProducts:
    """The `lags` engine for one kernel size; `threads` > 1 (CPU) runs row lags in that many threads.

    Sums accumulate per row lag, in the blocks that lag feeds, and are laid out as p x p matrices
    once, in `totals`.
    """

    name = "lags"

    def __init__(self, kernel_size: int, in_chans: int, offsets: tuple[int, ...], device: torch.device,
                 threads: int = 1):
        self.kernel_size = kernel_size
        self.in_chans = in_chans
        self.offsets = offsets
        self.device = device
        self.threads = threads if device.type == "cpu" else 1
        self._pool = ThreadPoolExecutor(threads) if self.threads > 1 else None
        self.dtype = torch.float32 if device.type == "cpu" else torch.float64
        p = in_chans * kernel_size ** 2
        self._first = torch.zeros(p, dtype=torch.float64, device=device)
        self._pair_firsts = {(direction, d): PairSums.zeros(p, device) for direction in DIRECTIONS for d in offsets}
        self._blocks: dict[tuple, torch.Tensor] = {}
        self._n_patches = 0

    @staticmethod
    def cost(height: int, width: int, kernel_size: int, in_chans: int, offsets: tuple[int, ...]) -> float:
        """Work per image in multiply-adds: one Gram matrix of row segments per row and row lag, plus
        ITEM_COST for each small GEMM of an edge row (what dominates on small images)."""
        geometry = _Geometry((1, in_chans, height, width), kernel_size, offsets)
        k, c = kernel_size, in_chans
        gemms = height * geometry.nx * (k * (c * geometry.w) ** 2 + geometry.column_reach * (c * k) ** 2)
        items = sum(geometry.edge_rows(lag) * (len(geometry.range_ends) if lag < k else 1)
                    for lag in range(geometry.lag_count))
        return float(gemms + ITEM_COST * items)

    def add(self, images: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Add a batch of same-sized uint8 images; returns its sums with the products each entry summed."""
        n, c, height, width = images.shape
        step = max(1, SEGMENT_BYTES // (2 * height * width * c * (self.kernel_size + max(self.offsets, default=0)) * 4))
        found = []
        for part in images.split(step):
            found += self._add_part(part)
        return found

    def _add_part(self, images: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        geometry = _Geometry(images.shape, self.kernel_size, self.offsets)
        segments = geometry.segments(centred(images, self.dtype))
        found = []
        for lag, prefix in self._row_prefixes(geometry, segments):
            for key, block, count in geometry.blocks(lag, prefix):
                if key in self._blocks:
                    self._blocks[key] += block
                else:
                    self._blocks[key] = block.clone()
                found.append((block, count))
        k, ny, nx, n = self.kernel_size, geometry.ny, geometry.nx, geometry.n
        pixels = pixel_prefix_sums(images)
        first_sums = window_sums(pixels, k, ny, nx)
        self._first += first_sums
        found.append((first_sums, n * ny * nx))
        for d in geometry.row_offsets:
            found += self._add_pair_firsts("rows", d, pixels, ny, nx - d, (0, d), n)
        for d in geometry.column_offsets:
            found += self._add_pair_firsts("columns", d, pixels, ny - d, nx, (d, 0), n)
        self._n_patches += n * ny * nx
        return found

    def _row_prefixes(self, geometry: "_Geometry", segments: "_Segments"):
        """(lag, its row prefix sums) for every row lag in order; with threads, one lag a thread in flight while
        the caller reads the blocks of the last, so that at most threads + 1 lags' prefix sums are held."""
        if self._pool is None:
            for lag in range(geometry.lag_count):
                yield lag, geometry.row_prefixes(segments, lag)
            return
        pending = deque()
        for lag in range(geometry.lag_count):
            pending.append((lag, self._pool.submit(geometry.row_prefixes, segments, lag)))
            if len(pending) == self.threads:
                lag_done, future = pending.popleft()
                yield lag_done, future.result()
        while pending:
            lag_done, future = pending.popleft()
            yield lag_done, future.result()

    def _add_pair_firsts(self, direction: str, offset: int, pixels: torch.Tensor, rows: int, columns: int,
                         shift: tuple[int, int], n: int) -> list[tuple[torch.Tensor, int]]:
        k = self.kernel_size
        pair = self._pair_firsts[(direction, offset)]
        first, second = window_sums(pixels, k, rows, columns), window_sums(pixels, k, rows, columns, shift)
        pair.first += first
        pair.second += second
        pair.count += n * rows * columns
        return [(first, n * rows * columns), (second, n * rows * columns)]

    def totals(self) -> BatchSums:
        """Every sum so far, as p x p matrices in conv-weight order."""
        k, c = self.kernel_size, self.in_chans
        p = c * k * k
        # Blocks land in [a_y, b_y, c, a_x, c', b_x] (each pair of patch rows once), then one permutation.
        by_rows = (k, k, c, k, c, k)
        outer = torch.zeros(by_rows, dtype=torch.float64, device=self.device)
        crosses = {(direction, d): torch.zeros(by_rows, dtype=torch.float64, device=self.device)
                   for direction in DIRECTIONS for d in self.offsets}
        for (kind, offset, lag, placement), block in self._blocks.items():
            target = outer if kind == "patches" else crosses[(kind, offset)]
            first_row, second_row, order = placement
            target[list(first_row), list(second_row)] = block.permute(*order)

        def natural(blocks: torch.Tensor) -> torch.Tensor:
            return blocks.permute(2, 0, 3, 4, 1, 5).reshape(p, p)

        pairs = {direction: [] for direction in DIRECTIONS}
        for direction in DIRECTIONS:
            for d in self.offsets:
                pair = self._pair_firsts[(direction, d)]
                pairs[direction].append(PairSums(pair.first.clone(), pair.second.clone(),
                                                 natural(crosses[(direction, d)]), pair.count)
                                        if pair.count else None)
        return BatchSums(first=self._first.clone(), outer=natural(outer), pairs=pairs, n_patches=self._n_patches)


class _Geometry:
    """Which row lags, column ranges and row windows one batch shape needs, and where they land."""

    def __init__(self, shape: torch.Size, kernel_size: int, offsets: tuple[int, ...]):
        self.n, self.c, self.height, self.width = shape
        k = self.k = kernel_size
        self.ny, self.nx = self.height - k + 1, self.width - k + 1
        self.row_offsets = tuple(d for d in offsets if d < self.nx)
        self.column_offsets = tuple(d for d in offsets if d < self.ny)
        self.row_reach = max(self.row_offsets, default=0)
        self.column_reach = max(self.column_offsets, default=0)
        # Segments of width w cover positions a_x and b_x + d of every pair along a row.
        self.w = k + self.row_reach
        # Columns every range shares; pairs along a row at offset d end d columns before nx.
        self.main = self.nx - self.row_reach
        # Column ranges [0, end): the patches' own (nx) and each row offset's (nx - d), by end.
        self.range_ends = sorted({self.nx, *(self.nx - d for d in self.row_offsets)})
        # Row lags b_y - a_y within a patch, and up to d + k - 1 for pairs along a column.
        self.lag_count = min(self.height, k + self.column_reach)

    def segments(self, pixels: torch.Tensor) -> "_Segments":
        """(N, w*c, H, columns): row i's segment starting at each column, coordinates ordered (s, c).

        Split at `main` into the columns every range shares and the tail. Zero-padded on the right:
        the tail columns' far positions fall outside the image, and no range that reads them is used.
        Each part also laid out rows first, (N, H, w*c, columns), where a run of rows of one image is a
        batch of matrices as it lies: the edge rows' Gram matrices read it without a copy.
        """
        padded = torch.nn.functional.pad(pixels, (0, self.row_reach))
        windows = padded.unfold(3, self.w, 1)  # (N, c, H, nx, w)
        segments = windows.permute(0, 4, 1, 2, 3).reshape(self.n, self.w * self.c, self.height, self.nx)
        main, tail = segments[..., :self.main].contiguous(), segments[..., self.main:].contiguous()
        return _Segments(main, tail, main.permute(0, 2, 1, 3).contiguous(), tail.permute(0, 2, 1, 3).contiguous())

    def row_prefixes(self, segments: "_Segments", lag: int) -> "_RowPrefixes":
        """Prefix sums over rows of T_lag(i) = sum_x h(i, x) h(i + lag, x)^T, one per column range end.

        Every row window a sum reads starts in the first k - 1 rows and ends in the last k - 1 + d rows
        (d the largest offset along a column, at most the lag), so only those edge rows get a Gram matrix
        each; the core rows between them go through one long GEMM. Lags beyond the patch (pairs along a
        column) need only positions below k.
        """
        q = (self.w if lag < self.k else self.k) * self.c
        head, core_end, count = self._row_split(lag)
        # One prefix for the columns every range shares, one per stretch of tail columns up to the next end.
        prefixes = [(self.main, self._prefix(segments.main[:, :q], segments.main_rows[:, :, :q],
                                             lag, head, core_end, count))]
        ends = self.range_ends if lag < self.k else sorted({self.main, self.nx})
        for start, end in zip(ends, ends[1:]):
            columns = slice(start - self.main, end - self.main)
            prefixes.append((end, self._prefix(segments.tail[:, :q, :, columns],
                                               segments.tail_rows[:, :, :q, columns],
                                               lag, head, core_end, count)))
        return _RowPrefixes(prefixes, head, core_end)

    def _row_split(self, lag: int) -> tuple[int, int, int]:
        """(head, core end, rows) for a lag: every window it feeds starts at or before `head` and ends at or
        after `core end`.

        Windows start at a_y (or d + b_y for pairs along a column read transposed), always below k; they end
        at a_y + ny, or a_y + ny - d for pairs d rows apart, whose a_y is at least d - lag.
        """
        count = self.height - lag
        head = min(count, self.k - 1)
        return head, max(head, min(count, self.ny - min(self.column_reach, lag))), count

    def edge_rows(self, lag: int) -> int:
        head, core_end, count = self._row_split(lag)
        return head + count - core_end

    def _prefix(self, segments: torch.Tensor, rows_first: torch.Tensor, lag: int, head: int, core_end: int,
                count: int) -> torch.Tensor:
        """P[r] = sum of T_lag over the first r steps (the head rows, the core as one step, the tail rows), float64.

        `segments` (N, q, H, columns) and `rows_first` (N, H, q, columns) are the same segments in two layouts.
        """
        n, q, _, columns = segments.shape
        has_core = core_end > head
        prefix = torch.empty(head + count - core_end + has_core + 1, q, q, dtype=torch.float64,
                             device=segments.device)
        prefix[0] = 0
        # The head rows [0, head) and the tail rows [core_end, count): one Gram matrix a row, added over images
        # (copy_ converts the first image's to float64 in the same pass).
        for start, stop, slot in ((0, head, 1), (core_end, count, head + 1 + has_core)):
            if stop > start:
                for image in range(n):
                    grams = row_grams(rows_first[image, start:stop], rows_first[image, start + lag:stop + lag])
                    if image:
                        prefix[slot:slot + stop - start] += grams
                    else:
                        prefix[slot:slot + stop - start].copy_(grams)
        if has_core:
            prefix[head + 1] = band_gram(segments[:, :, head:core_end], segments[:, :, head + lag:core_end + lag])
        # Row by row: torch.cumsum along the first of three dimensions is several times slower.
        for step in range(2, len(prefix)):
            prefix[step] += prefix[step - 1]
        return prefix

    def blocks(self, lag: int, prefixes: "_RowPrefixes"):
        """(key, block, products summed per entry) for every block of every sum this row lag feeds.

        A block holds entries [pair, c, a_x, c', b_x] for the pairs of patch rows (a_y, b_y) its key
        places (see LagProducts.totals): key = (sum, offset, lag, (a_y values, b_y values, axis order)).
        """
        k, ny, nx, n = self.k, self.ny, self.nx, self.n
        direct, transposed = (0, 2, 1, 4, 3), (0, 4, 3, 2, 1)
        if lag < k:
            a_y = range(0, k - lag)
            b_y = range(lag, k)
            full = self._windows(prefixes, nx, a_y.start, a_y.stop, ny)
            block = full[:, :k, :, :k, :].permute(*direct)
            yield ("patches", 0, lag, (tuple(a_y), tuple(b_y), (0, 1, 2, 3, 4))), block, n * ny * nx
            if lag:
                yield ("patches", 0, lag, (tuple(b_y), tuple(a_y), (0, 3, 4, 1, 2))), block, n * ny * nx
            for d in self.row_offsets:
                pair = self._windows(prefixes, nx - d, a_y.start, a_y.stop, ny)
                count = n * ny * (nx - d)
                yield ("rows", d, lag, (tuple(a_y), tuple(b_y), (0, 1, 2, 3, 4))), \
                    pair[:, :k, :, d:d + k, :].permute(*direct), count
                if lag:
                    # Pairs whose first patch lies `lag` rows lower: the transposed entries (b_x + d, a_x).
                    yield ("rows", d, -lag, (tuple(b_y), tuple(a_y), (0, 1, 2, 3, 4))), \
                        pair[:, d:d + k, :, :k, :].permute(*transposed), count
        for d in self.column_offsets:
            count = n * (ny - d) * nx
            # Pairs d rows apart: patch rows (a_y, b_y) with d + b_y - a_y = lag read this lag directly...
            low, high = max(0, d - lag), min(k, k + d - lag)
            if high > low:
                below = self._windows(prefixes, nx, low, high, ny - d)[:, :k, :, :k, :]
                yield ("columns", d, lag, (tuple(range(low, high)), tuple(range(low + lag - d, high + lag - d)),
                                           (0, 1, 2, 3, 4))), below.permute(*direct), count
            # ...and those with a_y - b_y - d = lag > 0 read it transposed, from rows [d + b_y, b_y + ny).
            if 0 < lag < k - d:
                b_y = range(0, k - lag - d)
                above = self._windows(prefixes, nx, d, d + len(b_y), ny - d)[:, :k, :, :k, :]
                yield ("columns", d, -lag, (tuple(b + d + lag for b in b_y), tuple(b_y), (0, 1, 2, 3, 4))), \
                    above.permute(*transposed), count

    def _windows(self, prefixes: "_RowPrefixes", end: int, first_start: int, last_start: int,
                 length: int) -> torch.Tensor:
        """(starts, width, c, width, c): sums of T over rows [s, s + length) for s in [first_start, last_start)."""
        sums = prefixes.window(end, first_start, last_start, length)
        width = sums.shape[1] // self.c
        return sums.view(len(sums), width, self.c, width, self.c)


class _Segments:
    """A batch's row segments (_Geometry.segments): the shared columns and the tail, each in two layouts."""

    def __init__(self, main: torch.Tensor, tail: torch.Tensor, main_rows: torch.Tensor, tail_rows: torch.Tensor):
        self.main, self.tail, self.main_rows, self.tail_rows = main, tail, main_rows, tail_rows


class _RowPrefixes:
    """Prefix sums over one lag's head rows, its core (one step, where there is one) and its tail rows, per
    stretch of columns: P(r), the sum over rows below r, for r <= head or r >= tail.

    `segments` lists (end, P) by end: the first stretch of columns starts at 0, each next one where the
    previous ends; the range [0, end) is every stretch up to `end`.
    """

    def __init__(self, segments: list[tuple[int, torch.Tensor]], head: int, tail: int):
        self.segments = segments
        self.head = head
        self.tail = tail

    def position(self, row: int) -> int:
        return row if row <= self.head or self.tail == self.head else row - self.tail + self.head + 1

    def window(self, end: int, first_start: int, last_start: int, length: int) -> torch.Tensor:
        """Sums over rows [s, s + length) in column range [0, end), for s in [first_start, last_start).

        Every start lies at or before the head's end and every stop at or after the tail's start, so both
        are runs of consecutive prefix entries.
        """
        count = last_start - first_start
        stop = self.position(first_start + length)
        sums = None
        for segment_end, prefix in self.segments:
            if segment_end > end:
                break
            part = prefix[stop:stop + count] - prefix[first_start:first_start + count]
            sums = part if sums is None else sums.add_(part)
        return sums
