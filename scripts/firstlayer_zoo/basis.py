"""A dataset's patch basis: mean, covariance, its eigendecomposition and cross-covariances, stored as .npz.

A file holds one basis (`PatchBasis.save`), or the bases of one (dataset, preprocessing) at several kernel
sizes, computed in one reading of its images (`save_bases`); `PatchBasis.load` reads either, one basis at a time.
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
    arrays = {_set_prefix(basis.kernel_size) + name: getattr(basis, name) for basis in bases for name in basis.ARRAYS}
    write_npz(path, {"bases": [basis.header() for basis in bases]}, **arrays)


def eigendecomposition(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending (rounding negatives clipped to 0), each vector's largest entry positive.

    LAPACK on one thread: with two its eigenvectors differ in the last bits, and a job's BLAS threads are its
    Snakemake threads, so a basis would depend on how many threads its job was given.
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
