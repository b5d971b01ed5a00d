"""Benchmark: exact streaming patch statistics against the reference method.

The reference (as in the paper's code) materialises every patch in float64 and
runs a randomised PCA on the centred patch matrix. Ours streams batches and
accumulates exact integer moments. Both run on the same images; the script
prints time, peak memory and the agreement of the eigenvalues.

  python benchmarks/patch_stats.py cifar         # 2 CPU cores, 50,000 32x32 images, 3x3 patches
  python benchmarks/patch_stats.py imagenet-gpu  # one GPU, 50,000 JPEGs at 224, 7x7 patches, incl. PIL decode

Images are generated (smooth random fields plus noise, so the spectrum spans
decades like natural images'); `cifar` can read real CIFAR-10 batches instead
with --cifar-root (a folder holding cifar-10-batches-py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from firstlayer_zoo.dataset_sources import dataset_source  # noqa: E402
from firstlayer_zoo.patchstats import PatchMoments, basis_from_moments, source_basis  # noqa: E402
from firstlayer_zoo.preprocessing import Preprocessing  # noqa: E402


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every 5 ms (torch allocations included)."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def gib(self) -> float:
        return (self.peak - self.start) / 2**30


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def smooth_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (n, height, width, 3): 1/f random fields plus a little white noise."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))
    spectrum = (rng.standard_normal((n, 3, height, fx.shape[1]))
                + 1j * rng.standard_normal((n, 3, height, fx.shape[1]))) * amplitude
    fields = np.fft.irfft2(spectrum, s=(height, width))
    fields += 0.3 * fields[:, [1, 2, 0]]  # correlated colour channels
    fields /= fields.std(axis=(1, 2, 3), keepdims=True)
    fields = 128 + 40 * fields + rng.normal(0, 4, fields.shape)
    return np.clip(fields, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def reference_eigenvalues(images: np.ndarray, kernel_size: int, preprocessing: Preprocessing,
                          seed: int = 0) -> np.ndarray:
    """The paper's way: every normalised patch as a float64 row, then a randomised PCA (Halko et al.)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float64) / 255.0
    mean = torch.tensor(preprocessing.mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(preprocessing.std, dtype=torch.float64)[:, None, None]
    x = (x - mean) / std
    patches = x.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1).permute(0, 2, 3, 1, 4, 5)
    patches = patches.reshape(-1, preprocessing.in_chans * kernel_size**2).numpy()
    del x
    patches = patches - patches.mean(axis=0)
    p = patches.shape[1]
    rng = np.random.default_rng(seed)
    # scikit-learn's randomized_svd as PCA(svd_solver="randomized") calls it: 10 oversamples,
    # 4 power iterations normalised by LU, then QR and the SVD of the small projected matrix.
    q = rng.standard_normal((p, p + 10))
    for _ in range(4):
        q, _ = linalg.lu(patches @ q, permute_l=True)
        q, _ = linalg.lu(patches.T @ q, permute_l=True)
    q, _ = linalg.qr(patches @ q, mode="economic")
    singular = linalg.svd(q.T @ patches, compute_uv=False)[:p]
    return singular**2 / patches.shape[0]


def our_eigenvalues_of_array(images: np.ndarray, kernel_size: int, preprocessing: Preprocessing,
                             device: str, batch: int = 2048, threads: int = 1,
                             offsets: tuple[int, ...] = ()) -> tuple[np.ndarray, float, float]:
    """(eigenvalues, wall seconds, CPU seconds) of the whole computation for uint8 (N, H, W, C) images.

    With offsets, the cross-covariances C(d) are accumulated in the same pass and derived too.
    """
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    wall, cpu = time.perf_counter(), time.process_time()
    moments = PatchMoments(kernel_size, preprocessing.in_chans, device, threads=threads, offsets=offsets)
    for chunk in tensor.split(batch):
        moments.update(chunk)
    eigenvalues = basis_from_moments(moments, preprocessing.mean, preprocessing.std).eigenvalues
    return eigenvalues, time.perf_counter() - wall, time.process_time() - cpu


def agreement(ours: np.ndarray, reference: np.ndarray) -> str:
    relative = np.abs(ours - reference) / reference
    return f"max relative eigenvalue difference {relative.max():.2e} (largest {ours[0]:.4g}, smallest {ours[-1]:.4g})"


def read_cifar(root: Path) -> np.ndarray:
    source = dataset_source("cifar10", {"source": "cifar10"})
    return source.dataset(root).data


def run_cifar(args) -> None:
    # The engine runs batches in parallel threads; the reference's big GEMMs use torch's and BLAS's own threads.
    torch.set_num_threads(1)
    preprocessing = Preprocessing()
    if args.cifar_root:
        images = read_cifar(Path(args.cifar_root))[: args.images]
        origin = f"CIFAR-10 train from {args.cifar_root}"
    else:
        images = np.concatenate([smooth_images(5000, 32, 32, seed) for seed in range(args.images // 5000)])
        origin = "generated 1/f fields"
    print(f"cifar: {len(images)} images 32x32x3 ({origin}), {args.kernel}x{args.kernel} patches, "
          f"{args.threads} threads, cross-covariances at offsets {args.offsets or 'none'}, torch {torch.__version__}")
    for attempt in range(args.repeats):
        with PeakMemory() as memory:
            _, wall, cpu = our_eigenvalues_of_array(images, args.kernel, preprocessing, "cpu", threads=args.threads,
                                                    offsets=tuple(args.offsets))
        print(f"ours, all {len(images)} images, run {attempt + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU "
              f"(all threads), peak memory {memory.gib:.2f} GiB above the images")
    subset = images[: args.reference_images]
    ours_subset, _, _ = our_eigenvalues_of_array(subset, args.kernel, preprocessing, "cpu", threads=args.threads)
    with PeakMemory() as memory:
        wall, cpu = time.perf_counter(), time.process_time()
        reference = reference_eigenvalues(subset, args.kernel, preprocessing)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"reference (float64 patches + randomised PCA), first {len(subset)} images: {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU, peak memory {memory.gib:.2f} GiB")
    print(f"agreement on those {len(subset)} images: {agreement(ours_subset, reference)}")


def _write_jpegs(job) -> int:
    """Write `count` JPEGs: 1/f fields made at a quarter of the size, upsampled, plus pixel noise."""
    from PIL import Image

    folder, first, count, height, width, seed = job
    rng = np.random.default_rng(seed)
    fields = smooth_images(count, height // 4, width // 4, seed)
    for offset, field in enumerate(fields):
        picture = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.asarray(picture, dtype=np.int16) + rng.integers(-6, 7, size=(height, width, 3), dtype=np.int16)
        pixels = np.clip(noisy, 0, 255).astype(np.uint8)
        if (first + offset) % 3 == 0:
            pixels = pixels.transpose(1, 0, 2)  # portrait
        Image.fromarray(np.ascontiguousarray(pixels)).save(
            Path(folder) / f"{(first + offset) // 1000:03d}" / f"{first + offset:06d}.jpg", quality=90)
    return count


def generate_jpegs(folder: Path, n: int, height: int, width: int, workers: int) -> float:
    start = time.perf_counter()
    for group in range((n + 999) // 1000):
        (folder / f"{group:03d}").mkdir(parents=True, exist_ok=True)
    per_job = 250
    jobs = [(str(folder), first, min(per_job, n - first), height, width, first) for first in range(0, n, per_job)]
    with ProcessPoolExecutor(workers) as pool:
        assert sum(pool.map(_write_jpegs, jobs)) == n
    return time.perf_counter() - start


def run_imagenet_gpu(args) -> None:
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("imagenet-gpu needs a CUDA device; none is visible (--device cpu runs a smoke test)")
    cores = os.cpu_count() or 1
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU only"
    print(f"imagenet-gpu: {args.images} JPEGs {args.width}x{args.height} (1 in 3 portrait) -> resize 256, crop 224, "
          f"{args.kernel}x{args.kernel} patches; {name}, {cores} CPU cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp) / "jpegs"
        seconds = generate_jpegs(folder, args.images, args.height, args.width, cores)
        print(f"generated the JPEGs in {seconds:.1f} s (not part of the timings below)")
        source = dataset_source("bench", {"source": "folder", "path": str(folder)})
        preprocessing = Preprocessing(resize=256, crop=224, interpolation="bilinear")
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        basis = source_basis(source, None, preprocessing, args.kernel, device=args.device, workers=cores - 1,
                             progress=False)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
        print(f"ours (PIL decoding in {cores - 1} workers): {seconds:.1f} s end to end for {basis.n_images} images "
              f"({basis.n_images / seconds:.0f} images/s, {basis.n_patches:.3g} patches), GPU peak {peak:.2f} GiB")
        subset = dataset_source("bench", {"source": "folder", "path": str(folder),
                                          "subsample": {"count": args.reference_images, "seed": 0}})
        images = np.stack([preprocessing.apply(image).transpose(1, 2, 0) for image in subset.images(None)])
        ours_subset, _, _ = our_eigenvalues_of_array(images, args.kernel, preprocessing, args.device, batch=64)
        with PeakMemory() as memory:
            start = time.perf_counter()
            reference = reference_eigenvalues(images, args.kernel, preprocessing)
            seconds = time.perf_counter() - start
        print(f"reference (float64 patches + randomised PCA, CPU), {len(images)} of the images: {seconds:.1f} s, "
              f"peak memory {memory.gib:.2f} GiB")
        print(f"agreement on those {len(images)} images: {agreement(ours_subset, reference)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["cifar", "imagenet-gpu"])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--kernel", type=int, help="patch size (3 for cifar, 7 for imagenet-gpu)")
    parser.add_argument("--reference-images", type=int,
                        help="images the reference runs on (10,000 for cifar as in the issue; 20 for imagenet-gpu)")
    parser.add_argument("--threads", type=int, default=2, help="cifar: threads of the engine")
    parser.add_argument("--repeats", type=int, default=3, help="cifar: timed runs of ours")
    parser.add_argument("--cifar-root", help="cifar: read CIFAR-10 from here instead of generating images")
    parser.add_argument("--offsets", type=int, nargs="*", default=[],
                        help="cifar: also accumulate patch cross-covariances at these pixel offsets")
    parser.add_argument("--height", type=int, default=375, help="imagenet-gpu: JPEG height (ImageNet's median)")
    parser.add_argument("--width", type=int, default=500, help="imagenet-gpu: JPEG width (ImageNet's median)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="imagenet-gpu: cpu only smoke-tests the script on a machine without a GPU")
    parser.add_argument("--workdir", help="imagenet-gpu: where the JPEGs are written (a temporary folder)")
    args = parser.parse_args()
    if args.mode == "cifar":
        args.kernel = args.kernel or 3
        args.reference_images = args.reference_images or 10_000
        run_cifar(args)
    else:
        args.kernel = args.kernel or 7
        args.reference_images = args.reference_images or 20
        run_imagenet_gpu(args)


if __name__ == "__main__":
    main()
