"""Whitening in image space and colour: the output-map autocorrelation and the colour split, against direct sums."""

import numpy as np
import pytest
import torch

from conftest import direct_patches
from firstlayer_zoo.analysis import FILTER_ARRAYS, analyse_stem
from firstlayer_zoo.patchstats import dataset_basis
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.profiles import (OPPONENT_BASIS, colour_split, colour_variance_fraction, data_autocorrelation,
                                     output_autocorrelation)
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.shards import load_analyses, save_analyses
from firstlayer_zoo.stems import Stem

OFFSETS = (1, 4, 10)


def _normalised(images, prep):
    mean = torch.tensor(prep.mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(prep.std, dtype=torch.float64)[:, None, None]
    return [(torch.from_numpy(image).double() / 255 - mean) / std for image in images]


def _explicit_autocorrelation(images, prep, weight, offset):
    """Convolve every image with the stem, then correlate its maps d pixels apart: pairs pooled over images.

    Per filter: covariance over the pairs d apart along rows and along columns (averaged), over the variance
    of its map over every position; then the mean over filters.
    """
    maps = [torch.nn.functional.conv2d(x[None], torch.from_numpy(weight))[0] for x in _normalised(images, prep)]
    ratios = []
    for k in range(weight.shape[0]):
        values = torch.cat([m[k].reshape(-1) for m in maps])
        variance = values.var(unbiased=False)
        covariances = []
        for first, second in (([m[k][:, :-offset] for m in maps], [m[k][:, offset:] for m in maps]),
                              ([m[k][:-offset] for m in maps], [m[k][offset:] for m in maps])):
            a = torch.cat([f.reshape(-1) for f in first])
            b = torch.cat([s.reshape(-1) for s in second])
            covariances.append(((a - a.mean()) * (b - b.mean())).mean())
        ratios.append(float(sum(covariances) / 2 / variance))
    return float(np.mean(ratios))


@pytest.fixture(scope="module")
def photo_basis(photos):
    prep = Preprocessing()
    basis = dataset_basis((image.transpose(1, 2, 0) for image in photos), prep, 5, device="cpu",
                          progress=False, offsets=OFFSETS)
    return prep, basis


def test_autocorrelation_equals_an_explicit_convolution_of_real_images(photos, photo_basis):
    prep, basis = photo_basis
    rng = np.random.default_rng(0)
    # A smooth stem (a blur and two edge detectors) and a random one: far apart in how they whiten.
    weight = rng.normal(size=(6, 3, 5, 5))
    weight[0] = 1.0
    weight[1] = np.linspace(-1, 1, 5)[None, None, :]
    for stem_weight in (weight, rng.normal(size=(4, 3, 5, 5))):
        measured = output_autocorrelation(stem_weight.reshape(len(stem_weight), -1), basis.covariance,
                                          basis.cross_covariances)
        for i, offset in enumerate(OFFSETS):
            expected = _explicit_autocorrelation(photos, prep, stem_weight, offset)
            assert measured[i] == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_data_autocorrelation_is_that_of_the_pixels_themselves(photos, photo_basis):
    prep, basis = photo_basis
    data = output_autocorrelation(np.eye(basis.dimension), basis.covariance, basis.cross_covariances)
    # Identity filters: one per patch coordinate, i.e. one channel's pixels, shifted within the patch.
    identity = np.eye(basis.dimension).reshape(-1, 3, 5, 5)
    for i, offset in enumerate(OFFSETS):
        assert data[i] == pytest.approx(_explicit_autocorrelation(photos, prep, identity, offset), rel=1e-8)
    # Photographs are correlated far out, less so the further (here 48 px small, so 10 px is a fifth of one).
    assert data[0] > data[1] > data[2] > 0.3
    # What analyses use: the same values from the diagonals, without the identity bank's products.
    np.testing.assert_allclose(data_autocorrelation(basis.covariance, basis.cross_covariances), data, rtol=1e-14)
    flat = basis.covariance.copy()
    flat[0, 0] = 0.0  # a coordinate without variance is left out, as output_autocorrelation leaves out a dead filter
    np.testing.assert_allclose(data_autocorrelation(flat, basis.cross_covariances),
                               output_autocorrelation(np.eye(basis.dimension), flat, basis.cross_covariances),
                               rtol=1e-14)


def _spec():
    return CheckpointSpec(zoo="z", name="c", source="folder", arch="a", locator="c.pt", first_conv="conv1",
                          kernel_size=5, in_chans=3, dataset="photos", preprocessing=Preprocessing())


def test_analysis_carries_image_space_measurements_and_filters_through_save_and_load(photo_basis, tmp_path):
    _, basis = photo_basis
    rng = np.random.default_rng(3)
    init = rng.normal(size=(80, 3, 5, 5))
    stem = Stem(weight=init + rng.normal(size=init.shape), init=init, stride=2, first_conv="conv1")
    analysis = analyse_stem(_spec(), stem, basis, subtract_init=True)
    measured = analysis.image_space
    np.testing.assert_array_equal(measured.offsets, OFFSETS)
    # The stem's maps come from W itself; the initialisation's from W0.
    np.testing.assert_allclose(measured.autocorrelation_trained, output_autocorrelation(
        stem.weight.reshape(80, -1), basis.covariance, basis.cross_covariances))
    np.testing.assert_allclose(measured.autocorrelation_init, output_autocorrelation(
        init.reshape(80, -1), basis.covariance, basis.cross_covariances))
    assert analysis.filters_kept.shape == (16, 3, 5, 5) and analysis.filters_kept.dtype == np.float32
    save_analyses(tmp_path / "shard.npz", [analysis])
    (loaded,) = load_analyses(tmp_path / "shard.npz")
    for name in ("offsets", "autocorrelation_data", "autocorrelation_trained", "autocorrelation_init",
                 "energy_luminance", "energy_opponent"):
        np.testing.assert_array_equal(getattr(loaded.image_space, name), getattr(measured, name))
    assert loaded.measures == analysis.measures
    np.testing.assert_array_equal(loaded.init_filters_kept, analysis.init_filters_kept)
    assert loaded.filters_kept.dtype == np.float32  # kept as written, not widened
    (lean,) = load_analyses(tmp_path / "shard.npz", skip=FILTER_ARRAYS)
    assert lean.filters_kept is None and lean.init_filters_kept is None
    np.testing.assert_array_equal(lean.energy, analysis.energy)


def test_colour_split_of_grey_and_opponent_filters():
    _, basis = np.linalg.eigh(np.cov(np.random.default_rng(1).normal(size=(500, 27)), rowvar=False))
    spatial = np.random.default_rng(2).normal(size=(4, 1, 3, 3))
    grey = (spatial * np.ones((1, 3, 1, 1))).reshape(4, -1)
    red_green = (spatial * OPPONENT_BASIS[1][None, :, None, None]).reshape(4, -1)
    assert colour_split(grey, basis, 3, 1.0).colour_energy == pytest.approx(0.0, abs=1e-12)
    assert colour_split(red_green, basis, 3, 1.0).colour_energy == pytest.approx(1.0)
    mixed = np.random.default_rng(3).normal(size=(5, 27))
    split = colour_split(mixed, basis, 3, 1.0)
    # The two parts are orthogonal: their profiles' squares add up to the whole bank's squared norm.
    total = np.sum(split.energy_luminance**2) + np.sum(split.energy_opponent**2)
    assert total == pytest.approx(np.sum(mixed**2) / 5)


def test_colour_variance_of_the_data_matches_projected_patches(photos, photo_basis):
    prep, basis = photo_basis
    patches = direct_patches(photos, 5, prep.mean, prep.std)
    patches = patches - patches.mean(0)
    opponent = np.einsum("oc,ncs->nos", OPPONENT_BASIS[1:], patches.reshape(len(patches), 3, 25))
    expected = np.sum(opponent**2) / np.sum(patches**2)
    assert colour_variance_fraction(basis.covariance, 5) == pytest.approx(expected, rel=1e-9)


def _analyses(basis, count=3):
    found = []
    for i in range(count):
        rng = np.random.default_rng(10 + i)
        init = rng.normal(size=(8, 3, 5, 5))
        stem = Stem(weight=init + rng.normal(size=init.shape), init=init if i else None, stride=2,
                    first_conv="conv1")
        spec = CheckpointSpec(zoo="z", name=f"c{i}", source="folder", arch=f"a{i % 2}", locator=f"c{i}.pt",
                              first_conv="conv1", kernel_size=5, in_chans=3, dataset="photos",
                              preprocessing=Preprocessing())
        found.append(analyse_stem(spec, stem, basis, subtract_init=True))
    return found


def test_tables_carry_the_curves_the_headline_offset_and_the_colour_split(photo_basis):
    from firstlayer_zoo.tables import build_tables

    _, basis = photo_basis
    analyses = _analyses(basis)
    tables = build_tables(analyses)
    curves = tables["autocorrelation"]
    assert len(curves) == 3 * len(OFFSETS) and list(curves["offset"][:3]) == list(OFFSETS)
    fits = tables["fits"].set_index("checkpoint")
    for analysis in analyses:
        row = fits.loc[f"z/{analysis.checkpoint.name}"]
        measured = analysis.image_space
        assert row["autocorr_offset"] == 10
        assert row["autocorr_trained"] == measured.autocorrelation_trained[2]
        assert row["autocorr_data"] == measured.autocorrelation_data[2]
        assert row["colour_energy"] == analysis.measures["colour_energy"]
    assert np.isnan(fits.loc["z/c0", "autocorr_init"]) and np.isfinite(fits.loc["z/c1", "autocorr_init"])
    profiles = tables["profiles"]
    for name, group in profiles.groupby("checkpoint"):
        # The luminance and opponent parts' squares add up to the whole profile's.
        whole = np.sum(group["energy"] ** 2)
        assert np.sum(group["energy_luminance"] ** 2 + group["energy_opponent"] ** 2) == pytest.approx(whole)


def test_image_space_plots_draw(photo_basis, tmp_path):
    from firstlayer_zoo.plots import plot_autocorrelation, plot_colour, plot_filters
    from firstlayer_zoo.tables import build_tables

    _, basis = photo_basis
    analyses = _analyses(basis)
    tables = build_tables(analyses)
    checkpoints = tables["checkpoints"]
    plot_autocorrelation(checkpoints, tables["autocorrelation"], tmp_path / "autocorrelation.png")
    plot_colour(checkpoints, tables["fits"], tmp_path / "colour.png")
    plot_filters(analyses, basis.eigenvectors, 5, 3, "photos-k5c3", 2, tmp_path / "filters.png")
    for name in ("autocorrelation", "colour", "filters"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_filter_pictures_are_a_bounded_selection_one_per_architecture_first(photo_basis):
    from firstlayer_zoo.plots import choose_for_pictures, filter_picture

    _, basis = photo_basis
    analyses = _analyses(basis, count=5)
    chosen = choose_for_pictures(analyses, 3)
    assert [a.checkpoint.name for a in chosen] == ["c0", "c1", "c2"]
    assert [a.checkpoint.arch for a in chosen[:2]] == ["a0", "a1"]
    picture = filter_picture(np.array([[[-2.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]]]))
    np.testing.assert_allclose(picture[0, 0], [0.0, 0.5, 0.75])  # zero is mid-grey, -peak black, +peak white
    np.testing.assert_allclose(filter_picture(np.ones((1, 2, 2)))[0, 0], [1.0, 1.0, 1.0])


def test_plot_bases_draws_the_filters_of_shards_read_first_without_them(photo_basis, tmp_path, drawn):
    """The rule's path: choose among analyses read without their filter arrays, then draw the chosen ones."""
    from firstlayer_zoo.plots import filter_picture, plot_bases
    from firstlayer_zoo.tables import build_tables

    _, basis = photo_basis
    analyses = _analyses(basis, count=5)
    save_analyses(tmp_path / "shard.npz", analyses)
    (lean, *_) = load_analyses(tmp_path / "shard.npz", skip=FILTER_ARRAYS)
    assert lean.filters_kept is None and lean.has_filters
    basis.save(tmp_path / "basis.npz")
    tables = build_tables(analyses)
    slug = analyses[0].checkpoint.basis.slug
    counts = plot_bases(tables["checkpoints"], tables["consistency"], tables["consistency_groups"],
                        [str(tmp_path / "shard.npz")], {slug: (str(tmp_path / "basis.npz"), basis.kernel_size)},
                        {slug: ("heatmap", "filters")}, 300, 3)
    assert counts == {slug: (5, 3)}
    figure = drawn["filters"]
    assert "(3 checkpoints;" in figure.texts[0].get_text()
    rows = {axis.get_title(loc="left"): axis for axis in figure.axes if axis.get_title(loc="left")}
    by_id = {analysis.checkpoint.id: analysis for analysis in analyses}
    trained = [label.removesuffix(": trained") for label in rows if label.endswith(": trained")]
    assert len(trained) == 3
    for name in trained:
        np.testing.assert_allclose(rows[f"{name}: trained"].images[0].get_array(),
                                   filter_picture(by_id[name].filters_kept[0].astype(np.float64)))
