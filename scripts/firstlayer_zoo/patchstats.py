"""Exact patch statistics: mean, covariance and PCA basis of every k x k patch.

Images reach the engine as uint8 (after the geometric part of preprocessing),
so every patch coordinate is v_j in 0..255 and the normalised value is the
affine x_j = a_j v_j + b_j. An engine accumulates the integer sums of v - 128
and of (v - 128)(v - 128)^T *exactly* (and those of pairs of patches at the
autocorrelation offsets); the affine map is applied once at the end.

Two engines compute the same sums, bit for bit (moment_sums has their contract):
- `patches` (patch_gram): every patch formed, batched Gram matrices; n_patches x p^2
  work per image. Fast for small kernels on small images (CIFAR's 3x3).
- `lags` (lag_products): products of row segments at each row lag, windows by prefix
  sums over rows; work grows with the lags, not with n_patches x p^2, and offsets
  reuse the same lags. The only practical one from k = 7 at ImageNet sizes on.
`auto` picks per image size by their multiply-add counts, and says which it ran and why.

The covariance n*S2 - S1 S1^T is then formed in Python integers, so the only
rounding in the whole computation is the final conversion to float64.

Exactness is checked, not assumed: each batch's sums must be finite integers
no larger than its patch count allows, and the totals must stay inside
float64's exact range, or nothing is derived from them (`InvalidMomentsError`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .basis import PatchBasis, PixelStatistics
from .lag_products import LagProducts
from .loaders import cpu_batches, same_size_batches
from .moment_sums import DIRECTIONS, PIXEL_OFFSET, BatchSums, PairSums
from .patch_gram import PatchGram
from .preprocessing import Preprocessing

ENGINES = {engine.name: engine for engine in (PatchGram, LagProducts)}
# `patches` runs its GEMMs on whole images at once; measured on the CPU (docs/benchmarks.md), `lags`
# wins once `patches` costs this many times more.
LAGS_ADVANTAGE = 2.0
# Integers up to 2^53 are exact in float64; every accumulated sum must stay below.
EXACT_FLOAT64 = 2**53
# Work below which a patch_statistics job takes one thread, in multiply-adds (about 2 s at the engines' 1e10 a
# second): its few seconds of start-up then dominate, and two such jobs side by side finish sooner than one at a
# time with two threads each (a zoo plans a hundred such bases).
ONE_THREAD_WORK = 2e10
# v - 128 lies in -128..127: a sum over n patches is at most 128 n, a sum of products at most 128^2 n.
LARGEST_CENTRED_PIXEL = 128
FAULTS = {1: "non-finite values (NaN or Inf)", 2: "non-integral values",
          4: "values larger than its patches' uint8 pixels can sum to"}


def _size_and_integral(values: torch.Tensor) -> tuple[float, bool]:
    """The largest magnitude among a tensor of sums, and whether every one is an integer (NaN and Inf are not)."""
    size = float(values.abs().amax()) if values.numel() else 0.0
    return size, bool(np.isfinite(size)) and not bool((torch.frac(values) != 0).any())


class InvalidMomentsError(ValueError):
    """Accumulated patch sums that cannot be exact; no basis may be derived from them."""


def patch_dimension(kernel_size: int, in_chans: int) -> int:
    return in_chans * kernel_size * kernel_size


def choose_engine(height: int, width: int, kernel_size: int, in_chans: int, offsets: tuple[int, ...]
                  ) -> tuple[str, str]:
    """(engine, why) for images of this size: the cheaper by each engine's cost, `lags` weighed by LAGS_ADVANTAGE."""
    patches = PatchGram.cost(height, width, kernel_size, in_chans, offsets)
    lags = LagProducts.cost(height, width, kernel_size, in_chans, offsets)
    name = "lags" if patches > LAGS_ADVANTAGE * lags else "patches"
    return name, (f"{height}x{width} images, k={kernel_size}: about {patches:.2g} multiply-adds an image for "
                  f"patches, {lags:.2g} for lags")


def statistics_work(preprocessing: Preprocessing, kernel_sizes: Sequence[int], n_images: int,
                    offsets: tuple[int, ...]) -> float | None:
    """Multiply-adds of a job computing these statistics, by the cheaper engine's cost at the crop's size; None
    where the images' size is not fixed by a crop."""
    if preprocessing.crop is None:
        return None
    side = preprocessing.crop
    return n_images * sum(min(PatchGram.cost(side, side, k, preprocessing.in_chans, offsets),
                              LagProducts.cost(side, side, k, preprocessing.in_chans, offsets))
                          for k in kernel_sizes)


def statistics_threads(work: float | None, dataset_work: float | None, most: int) -> int:
    """Threads for a job of this much work among jobs of `dataset_work` in all (on the same images): `most` for a
    job whose work is not known; 1 below ONE_THREAD_WORK; else its share of `most` threads by its share of the
    work, at least 1.

    A job's start-up, decoding, saving and eigendecompositions run on one thread, so jobs side by side on one
    thread each use the cores better than one job at a time with several: only a job that is most of the work
    (nothing to run beside it) takes them all.
    """
    if work is None or not dataset_work:
        return most
    if work < ONE_THREAD_WORK:
        return 1
    return max(1, min(most, round(most * work / dataset_work)))


def exact_centred(outer: torch.Tensor, first: torch.Tensor, second: torch.Tensor, count: int) -> np.ndarray:
    """(count * outer - first second^T) / count^2 from checked integer sums: the numerator exact, no cancellation.

    The numerator is formed in float64 where both of its terms are exact there (their difference is then
    rounded once, correctly, as Python rounds an integer), else in int64 where every term fits (its
    conversion is correctly rounded too), else in Python integers; all three give the same floats.
    """
    # Checked before: integers below 2^53.
    outer, first, second = (values.cpu().numpy() for values in (outer, first, second))
    largest = (lambda values: int(max(values.max(initial=0), -values.min(initial=0))))
    if largest(outer) * count < EXACT_FLOAT64 and largest(first) * largest(second) < EXACT_FLOAT64:
        # In place, the same operations in the same order: a 3,072-dimensional basis has seven such matrices.
        numerator = outer * float(count)
        numerator -= np.outer(first, second)
        numerator /= float(count)
        numerator /= float(count)
        return numerator
    outer, first, second = (values.astype(np.int64) for values in (outer, first, second))
    if largest(outer) * count < 2**62 and largest(first) * largest(second) < 2**62:
        numerator = outer * count - np.outer(first, second)
    else:
        numerator = outer.astype(object) * count - np.outer(first.astype(object), second.astype(object))
    return numerator.astype(np.float64) / float(count) / float(count)


class PatchMoments:
    """Streaming exact first and second moments of uint8 image patches, and cross-moments at offsets."""

    def __init__(self, kernel_size: int, in_chans: int, device: str | torch.device = "cpu", threads: int = 1,
                 name: str = "images", offsets: Iterable[int] = (), engine: str = "auto"):
        """threads > 1 (CPU): the engine works in that many Python threads.

        Each torch op then works on one piece; set torch.set_num_threads(1) so that
        they do not also split it, since many small ops parallelise poorly within.
        `name` says what the images are (e.g. the dataset) in error messages.
        `offsets`: pixel distances d at which the cross-moments of patch pairs
        (origins d apart along a row, and along a column) are accumulated too.
        `engine`: one of ENGINES, or "auto" (chosen per image size, see choose_engine).
        """
        if engine != "auto" and engine not in ENGINES:
            raise ValueError(f"engine must be 'auto' or one of {sorted(ENGINES)}, got {engine!r}")
        self.name = name
        self.kernel_size = kernel_size
        self.in_chans = in_chans
        self.offsets = tuple(int(d) for d in offsets)
        if any(d < 1 for d in self.offsets):
            raise ValueError(f"offsets must be positive pixel distances, got {self.offsets}")
        self.device = torch.device(device)
        self.threads = threads
        self.engine = engine
        self._engines: dict[str, PatchGram | LagProducts] = {}
        # Per engine that ran: images it took and why it was chosen (one reason per image size).
        self.engine_use: dict[str, dict] = {}
        self.n_patches = 0
        self.n_images = 0
        # First image of each update() call, to name a faulty batch by the images it held.
        self._batch_starts: list[int] = []
        # (batch index, FAULTS bits) of the first invalid batch, -1 while none: kept on the device
        # so that checking a batch costs no synchronisation.
        self._first_fault = torch.full((2,), -1, dtype=torch.int64, device=self.device)
        self._checked = False

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
        name, why = (self.engine, "asked for") if self.engine != "auto" else choose_engine(
            height, width, k, self.in_chans, self.offsets)
        use = self.engine_use.setdefault(name, {"images": 0, "why": []})
        use["images"] += images.shape[0]
        if why not in use["why"]:
            use["why"].append(why)
        if name not in self._engines:
            self._engines[name] = ENGINES[name](k, self.in_chans, self.offsets, self.device, self.threads)
        self._record_faults(len(self._batch_starts), self._engines[name].add(images))
        self._batch_starts.append(self.n_images)
        self.n_images += images.shape[0]
        self.n_patches += images.shape[0] * (height - k + 1) * (width - k + 1)
        self.__dict__.pop("_totals", None)
        self._checked = False

    def describe_engines(self) -> str:
        """Which engine ran on how many images, and why: for the job's log."""
        return "; ".join(f"engine {name} on {use['images']} images ({'; '.join(use['why'])})"
                         for name, use in self.engine_use.items())

    @cached_property
    def _totals(self) -> BatchSums:
        """Every engine's sums added up (they share one layout), materialised once after the last update."""
        p = patch_dimension(self.kernel_size, self.in_chans)
        if len(self._engines) == 1:
            totals = next(iter(self._engines.values())).totals()
            totals.pairs = {direction: [pair or PairSums.zeros(p, self.device) for pair in pairs]
                            for direction, pairs in totals.pairs.items()}
            return totals
        first = torch.zeros(p, dtype=torch.float64, device=self.device)
        outer = torch.zeros(p, p, dtype=torch.float64, device=self.device)
        pairs = {direction: [PairSums.zeros(p, self.device) for _ in self.offsets] for direction in DIRECTIONS}
        for engine in self._engines.values():
            totals = engine.totals()
            first += totals.first
            outer += totals.outer
            for direction in DIRECTIONS:
                for total, part in zip(pairs[direction], totals.pairs[direction]):
                    if part is not None:
                        total.add(part)
        return BatchSums(first=first, outer=outer, pairs=pairs, n_patches=self.n_patches)

    @property
    def _sum(self) -> torch.Tensor:
        return self._totals.first

    @property
    def _outer(self) -> torch.Tensor:
        return self._totals.outer

    @property
    def _pairs(self) -> dict[str, list[PairSums]]:
        return self._totals.pairs

    def _record_faults(self, batch: int, sums: list[tuple[torch.Tensor, int]]) -> None:
        """Note, on the device, the first batch whose (sums, terms summed) are not what exact sums can be.

        A sum of first moments over n patches is at most 128 n in size, of products 128^2 n.
        """
        finite = integral = bounded = torch.ones((), dtype=torch.bool, device=self.device)
        for values, count in sums:
            largest = LARGEST_CENTRED_PIXEL ** (1 if values.ndim == 1 else 2) * count
            # Two passes a tensor: amax carries a NaN through, and a non-finite value is reported as that alone.
            size = values.abs().amax()
            size_finite = torch.isfinite(size)
            finite = finite & size_finite
            bounded = bounded & ((size <= largest) | ~size_finite)
            integral = integral & ((torch.frac(values).abs().amax() == 0) | ~size_finite)
        code = (~finite).long() | ((~integral).long() << 1) | ((~bounded).long() << 2)
        first = (self._first_fault[0] < 0) & (code > 0)
        self._first_fault = torch.where(first, torch.stack([torch.full_like(code, batch), code]), self._first_fault)
    def check_sums(self) -> None:
        """Raise InvalidMomentsError unless every batch and the totals are sums exact arithmetic can give.

        Checked once after the last update.
        """
        if self._checked:
            return
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
        totals = self._labelled_totals()
        for (label, _), (size, integral) in zip(totals, self._map(_size_and_integral, [values for _, values in totals])):
            if not np.isfinite(size) or not integral:
                raise InvalidMomentsError(f"{self.name}: accumulated {label} are not finite integers")
            if size >= EXACT_FLOAT64:
                raise InvalidMomentsError(
                    f"{self.name}: accumulated {label} reach {size:.3g}, beyond float64's exact "
                    f"range 2^53, after {self.n_patches} patches: use fewer images (a subsample)")
        sums = np.array([int(v) for v in self._sum.cpu().numpy()], dtype=object)
        squares = np.array([int(v) for v in np.diag(self._outer.cpu().numpy())], dtype=object)
        if np.any(squares * self.n_patches < sums * sums):
            raise InvalidMomentsError(f"{self.name}: accumulated sums and sums of squares imply a negative "
                                      f"variance over {self.n_patches} patches: they do not belong together")
        self._checked = True

    def _labelled_totals(self) -> list[tuple[str, torch.Tensor]]:
        totals = [("first-moment sums", self._sum), ("outer-product sums", self._outer)]
        for direction in DIRECTIONS:
            for offset, pair in zip(self.offsets, self._pairs[direction]):
                totals += [(f"pair sums at {offset} px along {direction}", values)
                           for values in (pair.first, pair.second, pair.outer)]
        return totals

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
        result = np.full((len(self.offsets), p, p), np.nan)

        def fill(i: int) -> None:
            found = [exact_centred(pair.outer, pair.first, pair.second, pair.count)
                     for pair in (self._pairs[direction][i] for direction in DIRECTIONS) if pair.count]
            if found:
                mean = sum(found) / len(found)
                np.add(mean, mean.T, out=result[i])
                result[i] /= 2

        self._map(fill, range(len(self.offsets)))
        return result

    def _map(self, function, items) -> list:
        """function over items, in the job's threads on a CPU (NumPy and torch work outside the GIL): the checks
        and cross-covariances of a 32x32 basis are a dozen passes over 75 MB matrices."""
        if self.threads < 2 or self.device.type != "cpu":
            return [function(item) for item in items]
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(function, items))

    def pixel_statistics(self, meta: dict | None = None) -> PixelStatistics:
        """Everything a basis needs from the images, in raw pixel values (PixelStatistics.basis normalises)."""
        mean, covariance = self.pixel_covariance()
        p = covariance.shape[0]
        return PixelStatistics(
            kernel_size=self.kernel_size, in_chans=self.in_chans, mean=mean, covariance=covariance,
            offsets=np.array(self.offsets, dtype=np.int64),
            cross_covariances=self.pixel_cross_covariances() if self.offsets else np.zeros((0, p, p)),
            n_patches=self.n_patches, n_images=self.n_images, meta=dict(meta or {}))


def basis_from_moments(moments: PatchMoments, mean: Iterable[float], std: Iterable[float],
                       meta: dict | None = None, second_moment: str = "centred") -> PatchBasis:
    """The basis of the normalised patches' covariance, or of their uncentred second moment (same sums)."""
    return moments.pixel_statistics(meta).basis(mean, std, second_moment=second_moment)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pixel_statistics_from_batches(batches: Iterable[torch.Tensor], in_chans: int, kernel_sizes: Sequence[int],
                                  device: str | None = None, total: int | None = None, progress: bool = True,
                                  meta: dict | None = None, threads: int = 1, name: str = "images",
                                  offsets: Iterable[int] = (), engine: str = "auto") -> list[PixelStatistics]:
    """Exact pixel statistics at several kernel sizes from one pass over a stream of preprocessed uint8
    (N, c, H, W) batches (`name`: what they are); each batch feeds every kernel size in turn.

    offsets: pixel distances at which patch cross-covariances C(d) are measured in the same pass.
    Each one's meta says which engine ran on how many images, and why (`engines`).
    """
    device = device or default_device()
    every = [PatchMoments(k, in_chans, device, threads=threads, name=name, offsets=offsets, engine=engine)
             for k in kernel_sizes]
    label = ", ".join(str(k) for k in kernel_sizes)
    with tqdm(total=total, desc=f"patch statistics k={label}", unit="img",
              disable=not progress, mininterval=2) as bar:
        for batch in batches:
            for moments in every:
                moments.update(batch)
            bar.update(batch.shape[0])
    return [moments.pixel_statistics({**(meta or {}), "device": str(moments.device), "engines": moments.engine_use})
            for moments in every]


def bases_from_batches(batches: Iterable[torch.Tensor], preprocessing: Preprocessing, kernel_sizes: Sequence[int],
                       second_moment: str = "centred", meta: dict | None = None, **options) -> list[PatchBasis]:
    """Exact patch bases at several kernel sizes from one pass over a stream of preprocessed uint8 batches,
    normalised as `preprocessing` says (options: pixel_statistics_from_batches')."""
    statistics = pixel_statistics_from_batches(batches, preprocessing.in_chans, kernel_sizes, meta=meta, **options)
    return [entry.basis_under(preprocessing, second_moment) for entry in statistics]


def basis_from_batches(batches: Iterable[torch.Tensor], preprocessing: Preprocessing, kernel_size: int,
                       **options) -> PatchBasis:
    """Exact patch basis of a stream of preprocessed uint8 batches at one kernel size (see bases_from_batches)."""
    return bases_from_batches(batches, preprocessing, [kernel_size], **options)[0]


def dataset_basis(images: Iterable[np.ndarray], preprocessing: Preprocessing, kernel_size: int,
                  **options) -> PatchBasis:
    """Exact patch basis of a stream of raw uint8 images under one preprocessing (options: bases_from_batches')."""
    prepared = same_size_batches(preprocessing.apply(image) for image in images)
    return basis_from_batches((torch.from_numpy(batch) for batch in prepared), preprocessing, kernel_size, **options)


def source_pixel_statistics(source, root: Path | None, preprocessing: Preprocessing, kernel_sizes: Sequence[int],
                            device: str | None = None, workers: int = 0, meta: dict | None = None,
                            indices: np.ndarray | None = None, **options) -> list[PixelStatistics]:
    """Exact pixel statistics of a dataset source's images `indices` (None: its selection; see prepared_indices)
    under `preprocessing`'s pixel pipeline, at every kernel size from one reading of the images.

    Images are loaded and preprocessed with PIL in `workers` DataLoader
    processes: timm's exact pixels. options: pixel_statistics_from_batches'.
    """
    indices = source.indices(root) if indices is None else indices
    batches = cpu_batches(source, root, preprocessing, workers=workers, indices=indices,
                          kernel_size=max(kernel_sizes))
    meta = {**(meta or {}), "subsample": source.subsample, "preprocessing": preprocessing.to_dict()}
    return pixel_statistics_from_batches(batches, preprocessing.in_chans, kernel_sizes, device=device,
                                         total=len(indices), meta=meta, name=f"dataset {source.name!r}", **options)


def source_bases(source, root: Path | None, preprocessing: Preprocessing, kernel_sizes: Sequence[int],
                 second_moment: str = "centred", **options) -> list[PatchBasis]:
    """Exact patch bases of a dataset source's images under `preprocessing`, at every kernel size from one
    reading of the images (options: source_pixel_statistics')."""
    return [entry.basis_under(preprocessing, second_moment)
            for entry in source_pixel_statistics(source, root, preprocessing, kernel_sizes, **options)]


def source_basis(source, root: Path | None, preprocessing: Preprocessing, kernel_size: int,
                 **options) -> PatchBasis:
    """The patch basis of a dataset source's images at one kernel size (see source_bases)."""
    return source_bases(source, root, preprocessing, [kernel_size], **options)[0]
