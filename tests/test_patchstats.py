import numpy as np
import pytest
import torch

from conftest import direct_patches
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.datasets import dataset_source
from firstlayer_zoo.patchstats import PatchMoments, basis_from_moments, dataset_basis, source_basis
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
    # 30x30 patches per 32x32 image: the float32 path, each per-image sum at its 2^24 bound for v = 0.
    images = torch.full((300, 3, 32, 32), value, dtype=torch.uint8)
    images[::2] = 255 - value
    moments = PatchMoments(3, 3)
    moments.update(images)
    mean, covariance = moments.pixel_covariance()
    assert moments.n_patches == 300 * 30 * 30
    np.testing.assert_array_equal(mean, np.full(27, 127.5))
    np.testing.assert_array_equal(covariance, np.full((27, 27), 127.5**2))


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
    assert basis.meta["subsample"] == {"count": 3, "seed": 4} and basis.meta["decode"] == "cpu"


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")


@requires_gpu
@pytest.mark.parametrize("kernel_size,in_chans", [(3, 3), (7, 3), (16, 3), (5, 1)])
def test_gpu_and_cpu_moments_are_identical(kernel_size, in_chans):
    rng = np.random.default_rng(kernel_size)
    for shape in [(40, in_chans, 32, 32), (2, in_chans, 300, 90)]:  # the second is cut into row bands
        images = torch.from_numpy(rng.integers(0, 256, size=shape, dtype=np.uint8))
        cpu, gpu = PatchMoments(kernel_size, in_chans, "cpu"), PatchMoments(kernel_size, in_chans, "cuda")
        cpu.update(images)
        gpu.update(images.cuda())
        for ours, theirs in zip(gpu.pixel_covariance(), cpu.pixel_covariance()):
            np.testing.assert_array_equal(ours, theirs)


@requires_gpu
def test_gpu_decoding_gives_nearly_the_cpu_basis(tmp_path):
    from PIL import Image

    source = dataset_source("photos", {"source": "skimage"})
    for i, image in enumerate(source.images(None)):
        Image.fromarray(image).save(tmp_path / f"{i}.jpg", quality=95)
    folder = dataset_source("folder", {"source": "folder", "path": str(tmp_path)})
    prep = Preprocessing(resize=64, crop=56)
    cpu = source_basis(folder, None, prep, 7, device="cuda", decode="cpu", progress=False)
    gpu = source_basis(folder, None, prep, 7, device="cuda", decode="gpu", progress=False)
    assert gpu.n_patches == cpu.n_patches
    # nvJPEG and GPU resampling differ from libjpeg and PIL in the last bits of some pixels.
    np.testing.assert_allclose(gpu.eigenvalues[:10], cpu.eigenvalues[:10], rtol=0.05)


def test_parallel_batches_give_identical_moments():
    images = torch.from_numpy(np.random.default_rng(3).integers(0, 256, size=(120, 3, 40, 36), dtype=np.uint8))
    serial, parallel = PatchMoments(4, 3), PatchMoments(4, 3, threads=2)
    for half in images.split(60):
        serial.update(half)
        parallel.update(half)
    for ours, theirs in zip(parallel.pixel_covariance(), serial.pixel_covariance()):
        np.testing.assert_array_equal(ours, theirs)
