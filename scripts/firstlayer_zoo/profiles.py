"""Energy profiles, the analytic linear-CNN profile, its fit, whitening and consistency.

The exact definitions are in docs/science.md (after Chowers & Weiss, ICML 2023); the image-space and
colour measurements are defined in docs/measurements.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

# Components whose variance is below this fraction of the largest one carry no
# signal in float64 (flat or duplicated channels); they are left out of fits and
# spreads so that 1/sqrt(s) cannot explode.
RELATIVE_EIGENVALUE_FLOOR = 1e-12


def energy_profile(filters: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """RMS gain of a filter bank along each basis direction.

    filters: (K, p) rows are flattened filters in conv-weight order (in, kh, kw).
    basis: (p, p) columns are the eigenvectors u_i, by descending eigenvalue.
    Returns e with e_i = sqrt(mean_k (W U)[k, i]^2).
    """
    filters = np.asarray(filters, dtype=np.float64)
    if filters.ndim != 2 or filters.shape[1] != basis.shape[0]:
        raise ValueError(
            f"filter bank of shape {filters.shape} does not match a basis over "
            f"{basis.shape[0]}-dimensional patches"
        )
    projected = filters @ basis
    return np.sqrt(np.mean(projected**2, axis=0))


def normalise(profile: np.ndarray) -> np.ndarray:
    peak = float(np.max(profile))
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError("profile has no positive energy: the filter bank is all zeros")
    return profile / peak


def analytic_profile(eigenvalues: np.ndarray, tau: float) -> np.ndarray:
    """f_i(tau) = (1 - exp(-tau s_i)) / sqrt(s_i): a linear CNN after training time tau."""
    s = np.asarray(eigenvalues, dtype=np.float64)
    return -np.expm1(-tau * s) / np.sqrt(s)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
    if denominator == 0:
        return float("nan")
    return float(np.dot(a, b) / denominator)


@dataclass(frozen=True)
class ProfileFit:
    tau: float
    tau_s1: float
    fit_r: float
    frac_whitened: float


def usable_components(eigenvalues: np.ndarray) -> np.ndarray:
    s = np.asarray(eigenvalues, dtype=np.float64)
    return s > RELATIVE_EIGENVALUE_FLOOR * s[0]


def fit_analytic_profile(energy: np.ndarray, eigenvalues: np.ndarray) -> ProfileFit:
    """Choose tau > 0 maximising Pearson r(energy, f(tau)).

    r is smooth in log(tau): a coarse log-spaced scan brackets the maximum and a
    bounded Brent search refines it. The scan spans tau*s_1 = 1e-3 (PCA-like)
    to tau*s_p = 1e3 (whitened); beyond those ends the family no longer changes.
    """
    keep = usable_components(eigenvalues)
    s = np.asarray(eigenvalues, dtype=np.float64)[keep]
    e = np.asarray(energy, dtype=np.float64)[keep]
    lo, hi = np.log(1e-3 / s[0]), np.log(1e3 / s[-1])

    def negative_r(log_tau: float) -> float:
        r = pearson(e, analytic_profile(s, np.exp(log_tau)))
        return 1.0 if np.isnan(r) else -r

    grid = np.linspace(lo, hi, 97)
    scores = np.array([negative_r(g) for g in grid])
    best = int(np.argmin(scores))
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    refined = minimize_scalar(negative_r, bounds=(left, right), method="bounded",
                              options={"xatol": 1e-10})
    log_tau = refined.x if refined.fun <= scores[best] else grid[best]
    tau = float(np.exp(log_tau))
    return ProfileFit(
        tau=tau,
        tau_s1=tau * float(s[0]),
        fit_r=-negative_r(log_tau),
        frac_whitened=float(np.mean(tau * s > 1.0)),
    )


@dataclass(frozen=True)
class Whitening:
    input_spread: float
    output_spread: float


def whitening_spreads(energy: np.ndarray, eigenvalues: np.ndarray) -> Whitening:
    """Decades spanned by the input variance and by the bank's output variance e_i^2 s_i."""
    keep = usable_components(eigenvalues)
    s = np.asarray(eigenvalues, dtype=np.float64)[keep]
    output = np.asarray(energy, dtype=np.float64)[keep] ** 2 * s
    positive = output[output > 0]
    return Whitening(
        input_spread=float(np.log10(s[0] / s[-1])),
        output_spread=float(np.log10(positive.max() / positive.min())) if positive.size else float("nan"),
    )


def output_autocorrelation(filters: np.ndarray, covariance: np.ndarray, cross_covariances: np.ndarray) -> np.ndarray:
    """Autocorrelation of a filter bank's output maps at each offset, averaged over the bank's filters.

    For a filter w the map y = w . x has covariance w^T C(d) w between positions d
    apart and variance w^T C w, so rho_w(d) = w^T C(d) w / w^T C w exactly, with
    no pass over images. Filters whose output variance is negligible are left out.
    filters: (K, p); covariance: (p, p); cross_covariances: (offsets, p, p).
    Returns (offsets,): the mean of rho_w(d) over the filters.
    """
    if len(cross_covariances) == 0:
        return np.zeros(0)  # a basis measured at no offset (analysis.autocorrelation_offsets: [])
    filters = np.asarray(filters, dtype=np.float64)
    # Quadratic forms through matrix products: a three-operand einsum runs unblocked, 50x slower at p = 3,072.
    return _mean_autocorrelation(_quadratic_forms(filters, covariance), cross_covariances,
                                 lambda live, cross: _quadratic_forms(filters[live], cross))


def data_autocorrelation(covariance: np.ndarray, cross_covariances: np.ndarray) -> np.ndarray:
    """output_autocorrelation of the identity bank (one filter per patch coordinate: the pixels themselves), from
    the diagonals alone, equal to it bit for bit: an identity row's quadratic form is one term."""
    if len(cross_covariances) == 0:
        return np.zeros(0)
    return _mean_autocorrelation(np.diagonal(covariance), cross_covariances,
                                 lambda live, cross: np.diagonal(cross)[live])


def _mean_autocorrelation(variance: np.ndarray, cross_covariances: np.ndarray, at_offset) -> np.ndarray:
    """The mean over filters whose output variance is not negligible of at_offset(live, C(d)) / variance."""
    live = variance > RELATIVE_EIGENVALUE_FLOOR * variance.max(initial=0.0)
    if not np.any(live):
        return np.full(len(cross_covariances), np.nan)
    return np.mean(np.stack([at_offset(live, cross) for cross in cross_covariances]) / variance[live], axis=1)


def _quadratic_forms(filters: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """w_k^T M w_k for every row w_k of `filters`."""
    return np.sum((filters @ matrix) * filters, axis=1)


# Orthonormal opponent basis of three (normalised) colour channels, rows: luminance (R+G+B)/sqrt(3),
# red-green (R-G)/sqrt(2), blue-yellow (R+G-2B)/sqrt(6).
OPPONENT_BASIS = np.array([
    [1.0, 1.0, 1.0] / np.sqrt(3.0),
    [1.0, -1.0, 0.0] / np.sqrt(2.0),
    [1.0, 1.0, -2.0] / np.sqrt(6.0),
])


def luminance_part(filters: np.ndarray) -> np.ndarray:
    """The luminance part of 3-channel filters (K, 3 k k in conv-weight order): at each pixel, the colour vector's
    projection on the luminance axis, so the work is K p, not the K p^2 of a product with a (p, p) projector."""
    by_channel = np.asarray(filters, dtype=np.float64).reshape(len(filters), 3, -1)
    along = np.einsum("c,kcs->ks", OPPONENT_BASIS[0], by_channel)
    return (OPPONENT_BASIS[0][None, :, None] * along[:, None, :]).reshape(len(filters), -1)


@dataclass(frozen=True)
class ColourSplit:
    energy_luminance: np.ndarray  # profile of the bank's luminance part, on the scale of the whole profile
    energy_opponent: np.ndarray   # profile of its colour-opponent part; squares of the two add up to the whole's
    colour_energy: float          # fraction of the bank's squared norm in the opponent channels


def colour_split(filters: np.ndarray, basis: np.ndarray, peak: float) -> ColourSplit:
    """Split a 3-channel bank into luminance and opponent parts; profiles divided by `peak` (the whole's max)."""
    filters = np.asarray(filters, dtype=np.float64)
    luminance = luminance_part(filters)
    opponent = filters - luminance
    total = float(np.sum(filters**2))
    return ColourSplit(
        energy_luminance=energy_profile(luminance, basis) / peak,
        energy_opponent=energy_profile(opponent, basis) / peak,
        colour_energy=float(np.sum(opponent**2) / total) if total > 0 else float("nan"),
    )


def colour_variance_fraction(covariance: np.ndarray, kernel_size: int) -> float:
    """Fraction of the data's patch variance in the opponent channels: tr(P_O C) / tr(C), where P_O acts on each
    pixel's colour alone, so tr(P_O C) sums the opponent projector against each pixel's 3x3 channel block."""
    pixels = kernel_size * kernel_size
    blocks = np.asarray(covariance, dtype=np.float64).reshape(3, pixels, 3, pixels)
    per_pixel = np.einsum("isjs->sij", blocks)
    opponent = np.eye(3) - np.outer(OPPONENT_BASIS[0], OPPONENT_BASIS[0])
    return float(np.einsum("ij,sji->", opponent, per_pixel) / np.trace(covariance))


def at_largest_offset(offsets: np.ndarray, curve: np.ndarray | None):
    """A curve over the measured offsets at the largest of them (fits.parquet's headline); None when there is no
    curve or no offset was measured."""
    if curve is None or not len(offsets):
        return None
    return curve[int(np.argmax(offsets))]
