import numpy as np
import pytest

from conftest import direct_patches
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.profiles import (
    analytic_profile,
    energy_profile,
    fit_analytic_profile,
    normalise,
    pearson,
    whitening_spreads,
)


def _random_basis(p, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    s = np.logspace(0, -4, p)
    return s, q


def test_bank_along_one_eigenvector_has_all_its_energy_there():
    s, u = _random_basis(27)
    gains = np.array([3.0, -1.0, 0.5, 2.0])[:, None]
    bank = gains * u[:, 4][None, :]
    e = energy_profile(bank, u)
    assert np.argmax(e) == 4
    np.testing.assert_allclose(e[4], np.sqrt(np.mean(gains**2)))
    np.testing.assert_allclose(np.delete(e, 4), 0.0, atol=1e-12)
    np.testing.assert_allclose(normalise(e)[4], 1.0)


def test_energy_squared_sums_to_frobenius_norm_over_filters():
    s, u = _random_basis(12, seed=3)
    bank = np.random.default_rng(1).normal(size=(7, 12))
    e = energy_profile(bank, u)
    np.testing.assert_allclose(np.sum(e**2), np.linalg.norm(bank) ** 2 / 7)


def test_energy_profile_rejects_mismatched_shapes():
    _, u = _random_basis(27)
    with pytest.raises(ValueError, match="does not match"):
        energy_profile(np.zeros((4, 147)), u)


def test_whitening_bank_has_flat_output_and_fits_late_time():
    s, u = _random_basis(27, seed=5)
    rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(27, 27)))
    bank = rotation @ np.diag(s**-0.5) @ u.T
    e = energy_profile(bank, u)
    spreads = whitening_spreads(e, s)
    assert spreads.input_spread == pytest.approx(4.0)
    assert spreads.output_spread == pytest.approx(0.0, abs=1e-9)
    fit = fit_analytic_profile(normalise(e), s)
    assert fit.fit_r > 0.9999
    assert fit.frac_whitened == 1.0


def test_pca_like_bank_fits_early_time():
    s, u = _random_basis(27, seed=6)
    e = np.sqrt(s)
    fit = fit_analytic_profile(normalise(e), s)
    assert fit.fit_r > 0.9999
    assert fit.frac_whitened == 0.0
    assert fit.tau_s1 < 0.1


def test_fit_recovers_gradient_descent_time_of_a_linear_layer_on_real_patches(photos):
    """A linear layer trained by GD on random targets over real patches follows f(eta*t) exactly."""
    prep = Preprocessing()
    patches = direct_patches(photos[:3], 3, prep.mean, prep.std)
    rng = np.random.default_rng(0)
    patches = patches[rng.choice(len(patches), 6000, replace=False)]
    patches -= patches.mean(0)
    n, p = patches.shape
    covariance = patches.T @ patches / n
    s, u = np.linalg.eigh(covariance)
    s, u = s[::-1], u[:, ::-1]
    targets = rng.normal(size=(n, 3000))
    cross = targets.T @ patches / n  # (K, p)
    eta, steps = 0.5 / s[0], 400
    weights = 1e-6 * rng.normal(size=cross.shape)
    for _ in range(steps):
        weights -= eta * (weights @ covariance - cross)
    fit = fit_analytic_profile(normalise(energy_profile(weights, u)), s)
    assert fit.fit_r >= 0.999
    assert fit.tau == pytest.approx(eta * steps, rel=0.05)


def test_analytic_profile_limits():
    s = np.logspace(1, -3, 10)
    early = analytic_profile(s, 1e-6)
    late = analytic_profile(s, 1e6)
    assert pearson(early, np.sqrt(s)) > 0.99999
    np.testing.assert_allclose(late, 1 / np.sqrt(s))
