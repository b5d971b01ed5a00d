import numpy as np
import pytest
import torch

from conftest import direct_patches
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.patchstats import PatchMoments, basis_from_moments, dataset_basis
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


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_basis_of_real_photos_matches_direct_computation(photos, kernel_size):
    prep = Preprocessing()
    basis = dataset_basis(
        ((image.transpose(1, 2, 0)) for image in photos), prep, kernel_size, device="cpu", progress=False)
    _, expected_cov = _direct_covariance(photos, kernel_size, prep.mean, prep.std)
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


def test_integer_sums_are_exact_beyond_float32_chunk_limits():
    # Worst case for the float32 path: every pixel 0 (v - 128 = -128) over many chunks.
    images = torch.zeros(3, 1, 200, 200, dtype=torch.uint8)
    moments = PatchMoments(3, 1)
    moments.update(images)
    mean, covariance = moments.pixel_covariance()
    assert moments.n_patches == 3 * 198 * 198
    assert np.all(mean == 0.0)
    assert np.all(covariance == 0.0)


def test_basis_roundtrip(tmp_path, photos):
    basis = dataset_basis((image.transpose(1, 2, 0) for image in photos[:2]), Preprocessing(), 3,
                          device="cpu", progress=False, meta={"dataset": "photos"})
    basis.save(tmp_path / "b.npz")
    loaded = PatchBasis.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(loaded.eigenvectors, basis.eigenvectors)
    assert loaded.meta["dataset"] == "photos"
    assert (loaded.n_patches, loaded.kernel_size, loaded.in_chans) == (basis.n_patches, 3, 3)


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
