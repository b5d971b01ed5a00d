import numpy as np
import pytest

from conftest import direct_patches
from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.profiles import (
    analytic_profile,
    energy_profile,
    fit_analytic_profile,
    normalise,
    pearson,
    whitening_spreads,
)
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.stems import Stem
from firstlayer_zoo.tables import fits_table, profiles_by_basis


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


def test_frac_whitened_counts_the_components_trained_past_tau_s_of_one():
    # s_i = 10^(-4i/26) and tau = 300: tau s_i > 1 for i = 0..16 (tau s_16 = 1.04, tau s_17 = 0.73,
    # tau s_20 = 0.25): 17 of 27 components, whatever threshold near 1 a change might pick instead.
    s, _ = _random_basis(27)
    fit = fit_analytic_profile(normalise(analytic_profile(s, 300.0)), s)
    assert fit.tau == pytest.approx(300.0, rel=1e-4)
    assert fit.tau_s1 == pytest.approx(300.0, rel=1e-4)
    assert fit.frac_whitened == 17 / 27


def test_output_spread_of_a_pca_like_bank_is_twice_the_input_spread():
    # Filters W = R diag(sqrt(s)) U^T give e_i^2 = s_i / K, so the output variance e_i^2 s_i = s_i^2 / K
    # spans twice the input's 4 decades.
    s, u = _random_basis(27, seed=4)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(27, 27)))
    spreads = whitening_spreads(energy_profile(rotation @ np.diag(np.sqrt(s)) @ u.T, u), s)
    assert spreads.input_spread == pytest.approx(4.0)
    assert spreads.output_spread == pytest.approx(8.0)


def _spec(name="c", dataset="photos"):
    return CheckpointSpec(zoo="z", name=name, source="folder", arch="a", locator=f"{name}.pt", first_conv="conv1",
                          kernel_size=3, in_chans=3, dataset=dataset, preprocessing=Preprocessing())


def _profile_by_quadratic_form(filters, u):
    """e_i = sqrt(u_i^T (W^T W / K) u_i), normalised to its peak: the energy profile by another route."""
    gram = filters.T @ filters / len(filters)
    energy = np.sqrt(np.einsum("pi,pq,qi->i", u, gram, u))
    return energy / energy.max()


@pytest.mark.parametrize("subtract_init", [True, False])
def test_analyse_stem_profiles_the_training_change_and_correlates_it_with_the_init(subtract_init):
    s, u = _random_basis(27, seed=8)
    basis = PatchBasis(kernel_size=3, in_chans=3, mean=np.zeros(27), covariance=u @ np.diag(s) @ u.T,
                       eigenvalues=s, eigenvectors=u, n_patches=1, n_images=1)
    rng = np.random.default_rng(9)
    init = rng.normal(size=(8, 27))
    # Training moved every filter along component 5 only: W - W0 has all its energy there.
    change = np.array([3.0, -1.0, 0.5, 2.0, 1.0, -2.0, 1.5, 0.25])[:, None] * u[:, 4][None, :]
    stem = Stem(weight=(init + change).reshape(8, 3, 3, 3), init=init.reshape(8, 3, 3, 3), stride=2,
                first_conv="conv1")
    analysis = analyse_stem(_spec(), stem, basis, subtract_init=subtract_init)
    assert analysis.status == "ok" and analysis.init_subtracted == subtract_init
    expected = np.eye(27)[4] if subtract_init else _profile_by_quadratic_form(init + change, u)
    np.testing.assert_allclose(analysis.energy, expected, atol=1e-12)
    expected_init = _profile_by_quadratic_form(init, u)
    np.testing.assert_allclose(analysis.energy_init, expected_init, rtol=1e-10)
    np.testing.assert_array_equal(analysis.eigenvalues, s)
    (row,) = fits_table([analysis]).to_dict("records")
    assert row["r_init"] == pytest.approx(np.corrcoef(expected, expected_init)[0, 1], abs=1e-12)
    assert row["input_spread"] == pytest.approx(4.0)


def test_a_trained_stem_equal_to_its_init_has_no_training_signal():
    s, u = _random_basis(27, seed=12)
    basis = PatchBasis(kernel_size=3, in_chans=3, mean=np.zeros(27), covariance=u @ np.diag(s) @ u.T,
                       eigenvalues=s, eigenvectors=u, n_patches=1, n_images=1)
    weight = np.random.default_rng(13).normal(size=(8, 3, 3, 3))
    stem = Stem(weight=weight, init=weight.copy(), stride=1, first_conv="conv1")
    skipped = analyse_stem(_spec(), stem, basis, subtract_init=True)
    assert skipped.status == "skipped: the stem equals its initialisation (no training signal)"
    assert skipped.init_known and not skipped.init_subtracted
    # Without subtraction the same stem has a profile of its own.
    assert analyse_stem(_spec(), stem, basis, subtract_init=False).status == "ok"


def test_profiles_are_gathered_per_basis_never_lumped_together():
    # Profiles in different bases are along different eigenvectors: correlating them would mean nothing.
    s, u = _random_basis(27, seed=10)
    basis = PatchBasis(kernel_size=3, in_chans=3, mean=np.zeros(27), covariance=u @ np.diag(s) @ u.T,
                       eigenvalues=s, eigenvectors=u, n_patches=1, n_images=1)
    rng = np.random.default_rng(11)
    datasets = {"a": "photos", "b": "cifar", "c": "photos"}
    analyses = [analyse_stem(_spec(name, dataset), Stem(weight=rng.normal(size=(4, 3, 3, 3)), init=None, stride=1,
                                                        first_conv="conv1"), basis, subtract_init=False)
                for name, dataset in datasets.items()]
    grouped = profiles_by_basis(analyses)
    photos, cifar = _spec("a", "photos").basis.slug, _spec("b", "cifar").basis.slug
    assert sorted(grouped) == sorted([photos, cifar])
    assert list(grouped[photos][0]) == ["z/a", "z/c"] and list(grouped[cifar][0]) == ["z/b"]
    np.testing.assert_array_equal(grouped[photos][1], [analyses[0].energy, analyses[2].energy])


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
