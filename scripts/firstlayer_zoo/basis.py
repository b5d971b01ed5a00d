"""A dataset's patch basis: mean, covariance, its eigendecomposition and cross-covariances, stored as .npz.

Two steps, two kinds of file. `PixelStatistics` are what the images give at one kernel size: the exact mean,
covariance and cross-covariances of raw 0..255 patch values, which depend only on the pixels (resize, crop,
interpolation), not on the normalisation. `PixelStatistics.basis` applies a preprocessing's normalisation to
them analytically and decomposes the result: a `PatchBasis`. Preprocessings that differ only in mean and std
(many of timm's) thus share one reading of their images. A file holds one basis (`PatchBasis.save`), or the
bases of one (dataset, preprocessing) at several kernel sizes (`save_bases`); `PatchBasis.load` reads either,
one basis at a time; `save_pixel_statistics` and `load_pixel_statistics` do the same for the statistics.
Imports numpy only: a job that turns statistics into bases starts in a fraction of a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from threadpoolctl import threadpool_limits

from .atomic import write_npz


# The second moment a basis decomposes: the covariance E[(x - mu)(x - mu)^T], or E[x x^T] as the paper's theory.
MOMENTS = ("centred", "uncentred")


@dataclass
class PatchBasis:
    """PCA basis of normalised patches: M = U diag(s) U^T, s descending.

    M is the covariance (moments "centred") or the uncentred second moment
    covariance + mean mean^T ("uncentred"). cross_covariances[i] is C(d) at
    offsets[i] pixels (see PatchMoments.pixel_cross_covariances), in the same
    normalised units as the covariance.
    """

    kernel_size: int
    in_chans: int
    mean: np.ndarray
    covariance: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    n_patches: int
    n_images: int
    meta: dict = field(default_factory=dict)
    moments: str = "centred"
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cross_covariances: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))

    @property
    def dimension(self) -> int:
        return self.eigenvalues.shape[0]

    ARRAYS = ("mean", "covariance", "eigenvalues", "eigenvectors", "offsets", "cross_covariances")

    def header(self) -> dict:
        return {"kernel_size": self.kernel_size, "in_chans": self.in_chans, "n_patches": self.n_patches,
                "n_images": self.n_images, "meta": self.meta, "moments": self.moments}

    def save(self, path: str | Path) -> None:
        write_npz(path, self.header(), **{name: getattr(self, name) for name in self.ARRAYS})

    @classmethod
    def load(cls, path: str | Path, kernel_size: int | None = None) -> "PatchBasis":
        """The basis in `path`; in a file of several (save_bases), the one at `kernel_size` (needed when several)."""
        with np.load(path, allow_pickle=False) as data:
            if "header" not in data.files:
                basis = cls._load_first_format(data)
            else:
                header = json.loads(str(data["header"]))
                if "bases" in header:
                    sizes = [entry["kernel_size"] for entry in header["bases"]]
                    if kernel_size is None and len(sizes) == 1:
                        kernel_size = sizes[0]
                    if kernel_size not in sizes:
                        raise ValueError(f"{path} holds the bases of kernel sizes {sizes}, not {kernel_size}")
                    prefix = _set_prefix(kernel_size)
                    header = header["bases"][sizes.index(kernel_size)]
                    return cls(**header, **{name: data[prefix + name] for name in cls.ARRAYS})
                basis = cls(**header, **{name: data[name] for name in cls.ARRAYS if name in data.files})
        if kernel_size is not None and basis.kernel_size != kernel_size:
            raise ValueError(f"{path} holds the basis of kernel size {basis.kernel_size}, not {kernel_size}")
        return basis

    @classmethod
    def _load_first_format(cls, data) -> "PatchBasis":
        """A basis saved before bases were written by atomic.write_npz (counts and meta as arrays), kept readable:
        a basis can take hours to measure again."""
        n_patches, n_images, kernel_size, in_chans = (int(v) for v in data["counts"])
        return cls(
            kernel_size=kernel_size,
            in_chans=in_chans,
            mean=data["mean"],
            covariance=data["covariance"],
            eigenvalues=data["eigenvalues"],
            eigenvectors=data["eigenvectors"],
            n_patches=n_patches,
            n_images=n_images,
            meta=json.loads(str(data["meta"])),
            # Bases written before these were measured read as centred, with no offsets.
            moments=str(data["moments"]) if "moments" in data else "centred",
            offsets=data["offsets"] if "offsets" in data else np.zeros(0, dtype=np.int64),
            cross_covariances=(data["cross_covariances"] if "cross_covariances" in data
                               else np.zeros((0, 0, 0))),
        )


def _set_prefix(kernel_size: int) -> str:
    return f"k{kernel_size}_"


def save_bases(path: str | Path, bases: list[PatchBasis]) -> None:
    """Bases of one (dataset, preprocessing) at several kernel sizes in one file, written atomically."""
    _save_sets(path, "bases", bases)


@dataclass
class PixelStatistics:
    """Exact statistics of raw 0..255 patch values at one kernel size, in conv-weight order (c, kh, kw).

    covariance is E[(x - mean)(x - mean)^T]; cross_covariances[i] is C(d) at offsets[i] pixels (see
    PatchMoments.pixel_cross_covariances), NaN where no image is large enough for the offset. meta says where
    they come from (dataset, pixel preprocessing, engines, device, subsample).
    """

    kernel_size: int
    in_chans: int
    mean: np.ndarray
    covariance: np.ndarray
    offsets: np.ndarray
    cross_covariances: np.ndarray
    n_patches: int
    n_images: int
    meta: dict = field(default_factory=dict)

    ARRAYS = ("mean", "covariance", "offsets", "cross_covariances")

    def header(self) -> dict:
        return {"kernel_size": self.kernel_size, "in_chans": self.in_chans, "n_patches": self.n_patches,
                "n_images": self.n_images, "meta": self.meta}

    def basis(self, mean: Iterable[float], std: Iterable[float], meta: dict | None = None,
              second_moment: str = "centred") -> PatchBasis:
        """The basis of the patches normalised as (v/255 - mean)/std: their covariance, or their uncentred second
        moment, decomposed; `meta` is added to the statistics' own."""
        if second_moment not in MOMENTS:
            raise ValueError(f"second_moment must be one of {MOMENTS}, got {second_moment!r}")
        scale, offset = affine_normalisation(self.kernel_size, mean, std)
        if scale.shape[0] != self.mean.shape[0]:
            raise ValueError(f"a normalisation of {scale.shape[0] // self.kernel_size ** 2} channels does not fit "
                             f"statistics of {self.in_chans}")
        scales = np.outer(scale, scale)
        covariance = self.covariance * scales
        normalised_mean = self.mean * scale + offset
        decomposed = (covariance if second_moment == "centred"
                      else covariance + np.outer(normalised_mean, normalised_mean))
        eigenvalues, eigenvectors = eigendecomposition(decomposed)
        p = covariance.shape[0]
        return PatchBasis(
            kernel_size=self.kernel_size,
            in_chans=self.in_chans,
            mean=normalised_mean,
            covariance=covariance,
            eigenvalues=eigenvalues,
            eigenvectors=eigenvectors,
            n_patches=self.n_patches,
            n_images=self.n_images,
            meta={**self.meta, **(meta or {})},
            moments=second_moment,
            offsets=self.offsets,
            cross_covariances=self.cross_covariances * scales if len(self.offsets) else np.zeros((0, p, p)),
        )


    def basis_under(self, preprocessing, second_moment: str = "centred") -> PatchBasis:
        """The basis under a Preprocessing's normalisation, recorded in its meta."""
        return self.basis(preprocessing.mean, preprocessing.std, meta={"preprocessing": preprocessing.to_dict()},
                          second_moment=second_moment)


def save_pixel_statistics(path: str | Path, statistics: list[PixelStatistics]) -> None:
    """The statistics of one (dataset, pixel preprocessing) at several kernel sizes in one file, written atomically."""
    _save_sets(path, "pixel_statistics", statistics)


def _save_sets(path: str | Path, kind: str, entries: list) -> None:
    """Entries (bases or pixel statistics) at several kernel sizes in one file, each array under its kernel
    size's prefix, the headers under `kind`."""
    arrays = {_set_prefix(entry.kernel_size) + name: getattr(entry, name) for entry in entries for name in entry.ARRAYS}
    write_npz(path, {kind: [entry.header() for entry in entries]}, **arrays)


def load_pixel_statistics(path: str | Path, kernel_size: int) -> PixelStatistics:
    """The statistics at `kernel_size` in a file of save_pixel_statistics."""
    with np.load(path, allow_pickle=False) as data:
        entries = json.loads(str(data["header"])).get("pixel_statistics") if "header" in data.files else None
        if entries is None:
            raise ValueError(f"{path} holds no pixel statistics; delete it and run the workflow again")
        sizes = [entry["kernel_size"] for entry in entries]
        if kernel_size not in sizes:
            raise ValueError(f"{path} holds the pixel statistics of kernel sizes {sizes}, not {kernel_size}")
        prefix = _set_prefix(kernel_size)
        arrays = {name: data[prefix + name] for name in PixelStatistics.ARRAYS}
    return PixelStatistics(**entries[sizes.index(kernel_size)], **arrays)


def eigendecomposition(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending (rounding negatives clipped to 0), each vector's largest entry positive.

    LAPACK on one thread: with two its eigenvectors differ in the last bits, and a job's BLAS threads are its
    Snakemake threads, so a basis would depend on how many threads its job was given. (Two threads, fixed in
    every job, were tried: in a job declaring one they fought the job beside it, and a whole timm zoo's nine
    32x32 bases took 11 to 20 s each instead of 5; docs/benchmarks.md.)
    """
    with threadpool_limits(limits=1, user_api="blas"):
        values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    pivot = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[pivot, np.arange(vectors.shape[1])])
    return values, vectors * signs


def affine_normalisation(kernel_size: int, mean: Iterable[float], std: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Scale and offset per patch coordinate mapping 0..255 to (v/255 - mean_c)/std_c."""
    mean = np.asarray(list(mean), dtype=np.float64)
    std = np.asarray(list(std), dtype=np.float64)
    per_coordinate = kernel_size * kernel_size
    scale = np.repeat(1.0 / (255.0 * std), per_coordinate)
    offset = np.repeat(-mean / std, per_coordinate)
    return scale, offset
