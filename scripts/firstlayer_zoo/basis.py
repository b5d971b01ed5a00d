"""A dataset's patch basis: mean, covariance, its eigendecomposition and cross-covariances, stored as .npz."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import read_npz, write_npz


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

    def save(self, path: str | Path) -> None:
        header = {"kernel_size": self.kernel_size, "in_chans": self.in_chans, "n_patches": self.n_patches,
                  "n_images": self.n_images, "meta": self.meta, "moments": self.moments}
        write_npz(path, header, **{name: getattr(self, name) for name in self.ARRAYS})

    @classmethod
    def load(cls, path: str | Path) -> "PatchBasis":
        with np.load(path, allow_pickle=False) as data:
            if "header" not in data.files:
                return cls._load_first_format(data)
        header, arrays = read_npz(path)
        return cls(**header, **arrays)

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


def eigendecomposition(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending (rounding negatives clipped to 0), each vector's largest entry positive."""
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
