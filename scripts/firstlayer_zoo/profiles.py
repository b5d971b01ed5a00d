"""Energy profiles, the analytic linear-CNN profile, its fit, whitening and consistency.

The exact definitions are in docs/science.md (after Chowers & Weiss, ICML 2023).
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
