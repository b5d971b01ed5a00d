"""Benchmark: patch statistics at every kernel size, this checkout against a baseline checkout, same images.

Each measurement runs in its own Python process that imports the package of the checkout it measures, so a
baseline (say, a worktree of the commit before the `lags` engine) and this checkout are timed alike:

  python benchmarks/patch_engines.py photos --baseline ../base            # the 7 photos at 224, k = 3 ... 32
  python benchmarks/patch_engines.py cifar --baseline ../base             # 50,000 32x32 images, 3x3
  python benchmarks/patch_engines.py cifar --baseline ../base --offsets   # ... with the default offsets

`photos`: the seven colour photographs inside scikit-image, preprocessed as timm's default 224 eval
transform (resize 256, centre crop 224), as a `patch_statistics` job with `statistics_threads: 2` reads them
(one decoding worker, two engine threads), at the default autocorrelation offsets (2, 5, 10 pixels).
`cifar`: generated 1/f images (benchmarks/patch_stats.py), fed in batches of 2,048 as decoded CIFAR batches
are. Wall and CPU seconds (the process and its workers) cover the whole basis: reading, sums, eigendecomposition
and cross-covariances. `identical` compares every array of the two bases bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OFFSETS = (2, 5, 10)
ARRAYS = ("mean", "covariance", "eigenvalues", "eigenvectors", "offsets", "cross_covariances")

# Run in a fresh process with the measured checkout's package first on sys.path: one basis, timed, saved.
PHOTOS_JOB = """
import json, resource, sys, time
sys.path.insert(0, {scripts!r})
import torch
torch.set_num_threads(1)
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.patchstats import source_basis
from firstlayer_zoo.preprocessing import Preprocessing
source = dataset_source("photos", {{"source": "skimage"}})
wall, cpu = time.perf_counter(), time.process_time()
basis = source_basis(source, None, Preprocessing(resize=256, crop=224), {kernel}, device="cpu", workers=1,
                     threads=2, progress=False, offsets={offsets!r})
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
children = resource.getrusage(resource.RUSAGE_CHILDREN)
basis.save({output!r})
print(json.dumps({{"wall": wall, "cpu": cpu + children.ru_utime + children.ru_stime,
                  "engines": basis.meta.get("engines"), "images": basis.n_images,
                  "package": sys.modules["firstlayer_zoo"].__file__}}))
"""

CIFAR_JOB = """
import json, sys, time
sys.path.insert(0, {scripts!r})
sys.path.insert(0, {benchmarks!r})
import numpy as np, torch
torch.set_num_threads(1)
import firstlayer_zoo
from firstlayer_zoo.patchstats import PatchMoments, basis_from_moments
from firstlayer_zoo.preprocessing import Preprocessing
# After the package: patch_stats puts this checkout's scripts/ first on sys.path, which must not decide which
# package a baseline measures.
from patch_stats import smooth_images
images = np.concatenate([smooth_images(5000, 32, 32, seed) for seed in range({images} // 5000)])
tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
wall, cpu = time.perf_counter(), time.process_time()
moments = PatchMoments(3, 3, "cpu", threads=2, offsets={offsets!r})
for chunk in tensor.split(2048):
    moments.update(chunk)
basis = basis_from_moments(moments, Preprocessing().mean, Preprocessing().std)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
basis.save({output!r})
print(json.dumps({{"wall": wall, "cpu": cpu, "engines": getattr(moments, "engine_use", None),
                  "images": basis.n_images, "package": firstlayer_zoo.__file__}}))
"""


def measure(job: str, checkout: Path, output: Path, **values) -> dict:
    code = job.format(scripts=str(checkout / "scripts"), benchmarks=str(ROOT / "benchmarks"), output=str(output),
                      **values)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{checkout}: {result.stderr[-3000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(found["package"]).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"measuring {checkout}, the job imported the package at {found['package']}")
    return found


def identical(first: Path, second: Path) -> bool:
    import numpy as np

    with np.load(first) as a, np.load(second) as b:
        return all(np.array_equal(a[name], b[name], equal_nan=True) for name in ARRAYS)


def engines(found: dict | None) -> str:
    if not found:
        return "patches (the only engine)"
    return ", ".join(f"{name} on {use['images']}" for name, use in found.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["photos", "cifar"])
    parser.add_argument("--baseline", type=Path, help="a checkout to time beside this one (its scripts/ is imported)")
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 7, 14, 16, 32], help="photos: kernel sizes")
    parser.add_argument("--baseline-kernels", type=int, nargs="*",
                        help="photos: kernel sizes the baseline runs (default: all; at k = 32 it takes minutes)")
    parser.add_argument("--offsets", action="store_true", help="cifar: accumulate the default offsets too")
    parser.add_argument("--images", type=int, default=50_000, help="cifar: images (a multiple of 5,000)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{args.mode} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the start")
    checkouts = {"ours": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        if args.mode == "photos":
            cases = [(k, DEFAULT_OFFSETS) for k in args.kernels]
        else:
            cases = [(3, DEFAULT_OFFSETS if args.offsets else ())]
        for kernel, offsets in cases:
            found = {}
            for name, checkout in checkouts.items():
                if name == "baseline" and args.baseline_kernels is not None and kernel not in args.baseline_kernels:
                    continue
                output = Path(scratch) / f"{name}-k{kernel}.npz"
                if args.mode == "photos":
                    found[name] = measure(PHOTOS_JOB, checkout, output, kernel=kernel, offsets=offsets)
                else:
                    found[name] = measure(CIFAR_JOB, checkout, output, images=args.images, offsets=offsets)
                found[name]["file"] = output
                print(f"  k={kernel} {name}: {found[name]['wall']:.1f} s wall, {found[name]['cpu']:.1f} s CPU, "
                      f"{found[name]['images']} images, engine {engines(found[name]['engines'])}", flush=True)
            same = identical(found["ours"]["file"], found["baseline"]["file"]) if len(found) == 2 else None
            rows.append((kernel, offsets, found, same))
    print("\n| k | offsets | baseline wall / CPU | ours wall / CPU | speed-up (wall) | bases identical |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    for kernel, offsets, found, same in rows:
        ours, base = found["ours"], found.get("baseline")
        baseline = f"{base['wall']:.1f} s / {base['cpu']:.1f} s" if base else "not run"
        speed = f"{base['wall'] / ours['wall']:.1f}x" if base else ""
        print(f"| {kernel} | {', '.join(map(str, offsets)) or 'none'} | {baseline} | "
              f"{ours['wall']:.1f} s / {ours['cpu']:.1f} s | {speed} | {'' if same is None else 'yes' if same else 'NO'} |")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end")


if __name__ == "__main__":
    main()
