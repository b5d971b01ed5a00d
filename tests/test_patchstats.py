import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import direct_patches
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.patchstats import (
    ENGINES,
    InvalidMomentsError,
    PatchMoments,
    basis_from_moments,
    dataset_basis,
    source_basis,
)
from firstlayer_zoo.preprocessing import Preprocessing


def _direct_covariance(images, k, mean, std):
    patches = direct_patches(images, k, mean, std)
    return patches.mean(0), np.cov(patches, rowvar=False, bias=True)


@pytest.mark.parametrize("kernel_size,in_chans", [(3, 3), (5, 1), (7, 3), (16, 3)])
def test_covariance_matches_direct_float64_on_random_images(kernel_size, in_chans):
    rng = np.random.default_rng(kernel_size * 10 + in_chans)
    images = rng.integers(0, 256, size=(5, in_chans, 23, 29), dtype=np.uint8)
    mean, std = rng.uniform(0.3, 0.6, in_chans), rng.uniform(0.1, 0.3, in_chans)
    moments = PatchMoments(kernel_size, in_chans)
    moments.update(torch.from_numpy(images[:2]))
    moments.update(torch.from_numpy(images[2:]))
    basis = basis_from_moments(moments, mean, std)
    expected_mean, expected_cov = _direct_covariance(images, kernel_size, mean, std)
    assert basis.n_patches == 5 * (23 - kernel_size + 1) * (29 - kernel_size + 1)
    np.testing.assert_allclose(basis.mean, expected_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(basis.covariance, expected_cov, rtol=1e-10, atol=1e-12)
    values, vectors = np.linalg.eigh(expected_cov)
    np.testing.assert_allclose(basis.eigenvalues, values[::-1], rtol=1e-9, atol=1e-12)
    # White noise has near-equal eigenvalues, so eigenvectors are checked by what they
    # must satisfy: orthonormal, and U diag(s) U^T rebuilds the direct covariance.
    u = basis.eigenvectors
    np.testing.assert_allclose(u.T @ u, np.eye(u.shape[0]), atol=1e-10)
    np.testing.assert_allclose(u @ np.diag(basis.eigenvalues) @ u.T, expected_cov, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kernel_size,in_chans", [(3, 3), (7, 3), (5, 1), (11, 3)])
def test_basis_of_real_photos_matches_direct_computation(photos, kernel_size, in_chans):
    prep = Preprocessing() if in_chans == 3 else Preprocessing(mean=(0.45,), std=(0.25,))
    images = [image.transpose(1, 2, 0) for image in photos]
    basis = dataset_basis(iter(images), prep, kernel_size, device="cpu", progress=False)
    prepared = [prep.apply(image) for image in images]
    _, expected_cov = _direct_covariance(prepared, kernel_size, prep.mean, prep.std)
    np.testing.assert_allclose(basis.covariance, expected_cov, rtol=1e-10, atol=1e-13)
    values, vectors = np.linalg.eigh(expected_cov)
    top = values[::-1]
    # Natural patches: a spectrum over several decades, matched to the smallest component.
    assert basis.eigenvalues[0] / basis.eigenvalues[-1] > 1e3
    np.testing.assert_allclose(basis.eigenvalues, top, rtol=1e-7, atol=1e-14)
    # Photo spectra are well separated: each eigenvector matches up to its sign.
    overlap = np.abs(np.sum(basis.eigenvectors * vectors[:, ::-1], axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
    assert basis.n_images == len(photos)


@pytest.mark.parametrize("value", [0, 255])
def test_float32_path_is_exact_at_its_worst_case(value):
    # 32 patches per row, 64 rows: two row bands of exactly 1,024 patches, the float32 path's limit,
    # and for v = 0 each band's sum of products at its 2^24 bound.
    images = torch.full((30, 3, 66, 34), value, dtype=torch.uint8)
    images[::2] = 255 - value
    moments = PatchMoments(3, 3)
    moments.update(images)
    mean, covariance = moments.pixel_covariance()
    assert moments.n_patches == 30 * 64 * 32
    np.testing.assert_array_equal(mean, np.full(27, 127.5))
    np.testing.assert_array_equal(covariance, np.full((27, 27), 127.5**2))


def _exact_pixel_moments(images, kernel_size):
    """Mean and covariance of raw patches from int64 sums and Python fractions: one rounding each."""
    windows = np.lib.stride_tricks.sliding_window_view(images.astype(np.int64), (kernel_size, kernel_size),
                                                       axis=(2, 3))
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * kernel_size**2)
    n = len(patches)
    first = patches.sum(0)
    second = patches.T @ patches  # at most 255^2 * n, far below 2^63
    mean = np.array([float(Fraction(int(v), n)) for v in first])
    covariance = np.array([[float(Fraction(int(second[i, j]) * n - int(first[i]) * int(first[j]), n * n))
                            for j in range(len(first))] for i in range(len(first))])
    return mean, covariance


def test_integer_sums_are_exact_beyond_float32_chunk_limits():
    # Random pixels over 2 x 198 x 298 patches: each image's sums of products pass 2^24 many times
    # over, so float32 anywhere but inside one 1,024-patch band (a wider band, a float32 sum of the
    # bands) rounds them. The exact moments differ from the code's by its two final divisions at most.
    rng = np.random.default_rng(17)
    images = rng.integers(0, 256, size=(2, 1, 200, 300), dtype=np.uint8)
    moments = PatchMoments(3, 1)
    moments.update(torch.from_numpy(images))
    mean, covariance = moments.pixel_covariance()
    expected_mean, expected_covariance = _exact_pixel_moments(images, 3)
    assert moments.n_patches == 2 * 198 * 298
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-15, atol=0)
    np.testing.assert_allclose(covariance, expected_covariance, rtol=1e-15, atol=0)


def test_basis_roundtrip(tmp_path, photos):
    basis = dataset_basis((image.transpose(1, 2, 0) for image in photos[:2]), Preprocessing(), 3,
                          device="cpu", progress=False, meta={"dataset": "photos"}, offsets=(2, 10),
                          second_moment="uncentred")
    basis.save(tmp_path / "b.npz")
    loaded = PatchBasis.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(loaded.eigenvectors, basis.eigenvectors)
    np.testing.assert_array_equal(loaded.cross_covariances, basis.cross_covariances)
    np.testing.assert_array_equal(loaded.offsets, [2, 10])
    assert loaded.meta["dataset"] == "photos" and loaded.moments == "uncentred"
    assert (loaded.n_patches, loaded.kernel_size, loaded.in_chans) == (basis.n_patches, 3, 3)
    # A basis saved in the first format (counts and meta as arrays, before atomic.write_npz) still loads.
    first = tmp_path / "first.npz"
    np.savez(first, mean=basis.mean, covariance=basis.covariance, eigenvalues=basis.eigenvalues,
             eigenvectors=basis.eigenvectors, counts=np.array([basis.n_patches, basis.n_images, 3, 3]),
             meta=np.array(json.dumps(basis.meta)), moments=np.array("uncentred"), offsets=basis.offsets,
             cross_covariances=basis.cross_covariances)
    old = PatchBasis.load(first)
    np.testing.assert_array_equal(old.eigenvectors, basis.eigenvectors)
    assert (old.n_patches, old.n_images, old.meta, old.moments) == (basis.n_patches, basis.n_images, loaded.meta,
                                                                   "uncentred")


def test_uncentred_basis_decomposes_the_second_moment_of_the_same_patches(photos):
    prep = Preprocessing()
    images = [image.transpose(1, 2, 0) for image in photos]
    centred = dataset_basis(iter(images), prep, 3, device="cpu", progress=False)
    uncentred = dataset_basis(iter(images), prep, 3, device="cpu", progress=False, second_moment="uncentred")
    patches = direct_patches([prep.apply(image) for image in images], 3, prep.mean, prep.std)
    second_moment = patches.T @ patches / len(patches)
    np.testing.assert_allclose(uncentred.eigenvalues, np.linalg.eigvalsh(second_moment)[::-1], rtol=1e-8)
    np.testing.assert_array_equal(uncentred.covariance, centred.covariance)
    # ImageNet normalisation leaves these photos' patch mean away from zero: the two differ.
    assert uncentred.eigenvalues[0] > 1.05 * centred.eigenvalues[0]


def test_normalised_cross_covariances_match_direct_patches(photos):
    prep = Preprocessing()
    images = [image.transpose(1, 2, 0) for image in photos[:3]]
    basis = dataset_basis(iter(images), prep, 3, device="cpu", progress=False, offsets=(10,))
    prepared = [prep.apply(image) for image in images]
    raw = _direct_cross_covariance(prepared, 3, 10)
    scale = np.repeat(1 / (255 * np.asarray(prep.std)), 9)
    np.testing.assert_allclose(basis.cross_covariances[0], raw * np.outer(scale, scale), rtol=1e-9)


def test_rejects_float_images_and_wrong_channels():
    moments = PatchMoments(3, 3)
    with pytest.raises(TypeError, match="uint8"):
        moments.update(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        moments.update(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="smaller than a 3x3 patch"):
        moments.update(torch.zeros(1, 3, 2, 8, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_and_cpu_paths_agree(photos):
    prep = Preprocessing()
    images = [image.transpose(1, 2, 0) for image in photos]
    cpu = dataset_basis(iter(images), prep, 7, device="cpu", progress=False)
    gpu = dataset_basis(iter(images), prep, 7, device="cuda", progress=False)
    np.testing.assert_array_equal(gpu.covariance, cpu.covariance)
    np.testing.assert_allclose(gpu.eigenvalues, cpu.eigenvalues, rtol=1e-12, atol=1e-15)


def test_source_basis_with_decode_workers_and_subsample_matches_direct(tmp_path):
    options = {"source": "skimage", "images": ["astronaut", "coffee", "chelsea", "rocket"],
               "subsample": {"count": 3, "seed": 4}}
    source = dataset_source("photos", options)
    prep = Preprocessing(resize=40, crop=32)
    basis = source_basis(source, None, prep, 5, device="cpu", workers=1, progress=False)
    chosen = [prep.apply(image) for image in source.images(None)]
    assert len(chosen) == basis.n_images == 3
    _, expected_cov = _direct_covariance(chosen, 5, prep.mean, prep.std)
    np.testing.assert_allclose(basis.covariance, expected_cov, rtol=1e-10, atol=1e-13)
    assert basis.meta["subsample"] == {"count": 3, "seed": 4}


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")


@requires_gpu
@pytest.mark.parametrize("kernel_size,in_chans", [(3, 3), (7, 3), (16, 3), (5, 1)])
def test_gpu_and_cpu_moments_are_identical(kernel_size, in_chans):
    rng = np.random.default_rng(kernel_size)
    for shape in [(40, in_chans, 32, 32), (2, in_chans, 300, 90)]:  # the second is cut into row bands
        images = torch.from_numpy(rng.integers(0, 256, size=shape, dtype=np.uint8))
        cpu = PatchMoments(kernel_size, in_chans, "cpu", offsets=(1, 10))
        gpu = PatchMoments(kernel_size, in_chans, "cuda", offsets=(1, 10))
        cpu.update(images)
        gpu.update(images.cuda())
        for ours, theirs in zip(gpu.pixel_covariance(), cpu.pixel_covariance()):
            np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(gpu.pixel_cross_covariances(), cpu.pixel_cross_covariances())


def test_parallel_batches_give_identical_moments():
    images = torch.from_numpy(np.random.default_rng(3).integers(0, 256, size=(120, 3, 40, 36), dtype=np.uint8))
    serial, parallel = PatchMoments(4, 3), PatchMoments(4, 3, threads=2)
    for half in images.split(60):
        serial.update(half)
        parallel.update(half)
    for ours, theirs in zip(parallel.pixel_covariance(), serial.pixel_covariance()):
        np.testing.assert_array_equal(ours, theirs)


def _batches(count, seed=5):
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.integers(0, 256, size=(4, 3, 12, 12), dtype=np.uint8)) for _ in range(count)]


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("forged,what", [
    (float("nan"), "non-finite"),
    (float("inf"), "non-finite"),
    (0.5, "non-integral"),
    (1e30, "larger than its patches' uint8 pixels can sum to"),
])
def test_a_batch_with_impossible_sums_fails_naming_the_dataset_and_the_batch(monkeypatch, engine, forged, what):
    # Forge what a decoder writing into memory the moment kernels still read would leave: one bad value
    # in one batch's sums of products.
    original = ENGINES[engine].add
    calls = []

    def corrupted(self, images):
        found = original(self, images)
        calls.append(1)
        if len(calls) == 3:
            products = next(values for values, _ in found if values.ndim > 1)
            products[(0,) * products.ndim] = forged
        return found

    monkeypatch.setattr(ENGINES[engine], "add", corrupted)
    with pytest.raises(InvalidMomentsError) as error:
        moments = PatchMoments(3, 3, name="dataset 'photos'", engine=engine)
        for batch in _batches(5):
            moments.update(batch)
        basis_from_moments(moments, (0.5,) * 3, (0.2,) * 3)
    message = str(error.value)
    assert "dataset 'photos'" in message and "batch 3 (images 8..11" in message and what in message


def test_totals_beyond_float64_exact_range_are_refused(tmp_path):
    moments = PatchMoments(3, 3, name="dataset 'big'")
    for batch in _batches(2):
        moments.update(batch)
    moments._outer[0, 0] = 2.0**53 + 2  # an integer, but no longer exact
    with pytest.raises(InvalidMomentsError, match=r"dataset 'big'.*beyond float64's exact range 2\^53"):
        basis_from_moments(moments, (0.5,) * 3, (0.2,) * 3).save(tmp_path / "basis.npz")
    assert not (tmp_path / "basis.npz").exists()


def test_sums_that_do_not_belong_to_their_counts_are_refused():
    moments = PatchMoments(3, 3, name="dataset 'photos'")
    for batch in _batches(2):
        moments.update(batch)
    moments._sum[4] = 127 * moments.n_patches  # finite, integral, in range, but the squares say otherwise
    with pytest.raises(InvalidMomentsError, match="negative variance"):
        moments.pixel_covariance()
    moments = PatchMoments(3, 3)
    moments.update(_batches(1)[0])
    moments.n_images = moments.n_patches + 1
    with pytest.raises(InvalidMomentsError, match="inconsistent counts"):
        moments.pixel_covariance()


def test_extreme_but_valid_sums_pass_the_checks():
    # Every pixel 0 or 255: first moments at their bound -128 n, products at 128^2 n.
    moments = PatchMoments(3, 1)
    moments.update(torch.zeros(2, 1, 9, 9, dtype=torch.uint8))
    moments.update(torch.full((2, 1, 9, 9), 255, dtype=torch.uint8))
    mean, covariance = moments.pixel_covariance()
    np.testing.assert_array_equal(mean, np.full(9, 127.5))


def _direct_cross_covariance(images, k, offset):
    """C(d) the obvious way: every pair of raw patches d apart along rows, then columns; averaged, symmetrised."""
    found = []
    for axis in (1, 0):  # along a row (x + d), then along a column (y + d)
        first, second = [], []
        for image in images:
            windows = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (k, k), axis=(1, 2))
            patches = windows.transpose(1, 2, 0, 3, 4).reshape(windows.shape[1], windows.shape[2], -1)
            if patches.shape[axis] <= offset:
                continue
            ahead = patches[offset:] if axis == 0 else patches[:, offset:]
            behind = patches[:-offset] if axis == 0 else patches[:, :-offset]
            first.append(behind.reshape(-1, patches.shape[2]))
            second.append(ahead.reshape(-1, patches.shape[2]))
        if first:
            a, b = np.concatenate(first), np.concatenate(second)
            found.append((a - a.mean(0)).T @ (b - b.mean(0)) / len(a))
    if not found:
        return None
    mean = sum(found) / len(found)
    return (mean + mean.T) / 2


@pytest.mark.parametrize("kernel_size,in_chans,threads", [(3, 3, 1), (5, 1, 2), (2, 3, 1)])
def test_cross_covariances_match_direct_computation(kernel_size, in_chans, threads):
    rng = np.random.default_rng(kernel_size)
    # Smooth images, so that C(d) is far from zero; the tall pair is cut into row bands on the CPU.
    small = rng.integers(0, 256, size=(6, in_chans, 21, 17)).cumsum(axis=3) % 256
    tall = rng.integers(0, 256, size=(2, in_chans, 140, 70)).cumsum(axis=2) % 256
    offsets = (1, 4, 10, 30)
    moments = PatchMoments(kernel_size, in_chans, offsets=offsets, threads=threads)
    for batch in (small[:4], small[4:], tall):
        moments.update(torch.from_numpy(batch.astype(np.uint8)))
    cross = moments.pixel_cross_covariances()
    images = [*small.astype(np.uint8), *tall.astype(np.uint8)]
    for i, offset in enumerate(offsets):
        expected = _direct_cross_covariance(images, kernel_size, offset)
        np.testing.assert_allclose(cross[i], expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # The basis sums are untouched by the pairs.
    _, covariance = moments.pixel_covariance()
    patches = direct_patches(images, kernel_size, np.zeros(in_chans), np.full(in_chans, 1 / 255))
    np.testing.assert_allclose(covariance, np.cov(patches, rowvar=False, bias=True), rtol=1e-10)


def test_cross_covariance_is_nan_where_no_image_is_large_enough():
    moments = PatchMoments(3, 1, offsets=(2, 8))
    moments.update(torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 1, 9, 9), dtype=np.uint8)))
    cross = moments.pixel_cross_covariances()
    assert np.isfinite(cross[0]).all() and np.isnan(cross[1]).all()


def test_invalid_pair_sums_are_refused_before_any_cross_covariance():
    moments = PatchMoments(3, 3, name="dataset 'photos'", offsets=(2,))
    for batch in _batches(2):
        moments.update(batch)
    moments._pairs["columns"][0].outer[1, 1] = float("nan")
    with pytest.raises(InvalidMomentsError, match="pair sums at 2 px along columns are not finite integers"):
        moments.pixel_cross_covariances()
