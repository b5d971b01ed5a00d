"""One command proves every GPU path against the CPU on the same data, and prints one table (issue 26).

  python benchmarks/gpu_check.py --device cuda     # on one H100 or H200: under 10 minutes
  python benchmarks/gpu_check.py --device cpu      # tiny sizes, seconds: the script itself works

Rows (one per check; every patch-statistics row once per engine of patchstats.ENGINES):
- environment: torch, the device, the package imports (their warnings count too);
- patch sums k=K: PatchMoments' pixel_covariance() (mean and covariance) on the device equal to the CPU's
  bit for bit (np.array_equal), grey and colour, odd image sizes, bands, with offsets;
- C(d) k=K: pixel_cross_covariances() at the offsets, equal bit for bit the same way;
- notebook API: firstlayer_zoo.analyse on the device against the CPU, every table;
- bf16 training step / stem float32: the workflow's train() under bf16 autocast, the stem in float32
  (its inputs, output, weight and gradient; every other conv and linear layer in bf16; checkpoints
  saved in float32), and the stem's output and weight gradient against float64 on the CPU;
- ImageNet-sized patch sums: synthetic 224x224 colour images at k=16 with the study's offsets, the
  rate and an extrapolation to 50,000 and to ImageNet's 1,281,167 images; the CPU on a few of them;
- 12-run zoo --parallel N: the paper's zoo trained by benchmarks/train_speed.py's runs (the workflow's
  train()), images per second per run and GPU utilisation; below N = the zoo's size only a few runs
  for a few epochs, and the zoo's time extrapolated; then whether the target is met (the 12-run zoo of
  30 CIFAR epochs under 3 minutes on one H100 or H200). Last, as the longest.

A warning anywhere in a row (or in a training worker) fails that row; the warning is printed. The exit
code is 0 when every row passes (or is n/a), 1 otherwise. With --device cpu the "device" is the CPU run
a second way (other batches, threads), so the comparisons still compare two computations.
Needs torch, numpy, pandas, pyarrow and scipy, as on the device machine; no Snakemake, no network.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

PASS, FAIL, NOT_APPLICABLE = "pass", "FAIL", "n/a"
# Groups of rows, for --only.
GROUPS = ("patch", "cross", "notebook", "training", "imagenet", "zoo")
# The target of the paper-experiments issue: the 12-run zoo of 30 CIFAR epochs on one H100 or H200.
ZOO_TARGET_S = 180.0
ZOO_TARGET_RUNS, ZOO_TARGET_EPOCHS, ZOO_TARGET_IMAGES = 12, 30, 50_000
IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000
# The offsets of the study's cross-covariances (analysis.autocorrelation_offsets and the notebook's default).
STUDY_OFFSETS = (2, 5, 10)
# Stem of the bf16 training step against float64 on the CPU, largest |difference| over largest |value|.
# float32 loses about 6e-8 a rounding; the stem's output sums 27 products (3x3x3) and its weight gradient
# sums one product per position of the batch (64 x 32 x 32 = 65,536): even errors growing with sqrt(n)
# stay below 2e-5. TF32 (cuDNN's default for float32 convolutions) rounds every input to 10 bits, about
# 5e-4 relative, whatever n: these bounds tell float32 from TF32.
STEM_OUTPUT_TOLERANCE = 1e-5
STEM_GRADIENT_TOLERANCE = 1e-4
# The notebook's tables on the device and on the CPU come from bit-identical integer sums (checked by the
# patch rows), then from the same float64 code on the same host: they should be identical. 1e-12 relative
# leaves room only for a different BLAS reduction order in the host's eigendecomposition and projections.
NOTEBOOK_RTOL = 1e-12


@dataclass(frozen=True)
class Sizes:
    """How much each check does: `full` on a GPU (under 10 minutes in all), `tiny` for a CPU (seconds)."""

    patch_cases: dict  # k -> (channel counts, [(images, height, width), ...])
    offsets: tuple[int, ...]
    notebook_kernel: int
    notebook_preprocessing: dict
    train_images: int
    train_batch: int
    train_width: float
    zoo_images: int
    zoo_test_images: int
    zoo_batch: int
    zoo_width: float
    zoo_seeds: int
    zoo_labels: tuple[str, ...]
    zoo_epochs: int
    probe_epochs: int
    parallel: tuple[int, ...]
    imagenet_offsets: tuple[int, ...]
    imagenet_images: int
    imagenet_size: int
    imagenet_batch: int
    imagenet_reference_images: int


SIZES = {
    "full": Sizes(
        # A 130x101 image has 12,672 3x3 patches: more than a GPU band (8,192), so bands are cut.
        patch_cases={3: ((1, 3), [(192, 32, 32), (3, 37, 45), (1, 130, 101)]),
                     7: ((1, 3), [(16, 64, 64), (2, 71, 53)]),
                     16: ((1, 3), [(6, 96, 96), (2, 67, 81)]),
                     32: ((1, 3), [(3, 80, 72), (1, 45, 49)])},
        offsets=(1, 5, 10), notebook_kernel=7, notebook_preprocessing={"resize": 256, "crop": 224},
        train_images=2048, train_batch=64, train_width=1.0,
        zoo_images=ZOO_TARGET_IMAGES, zoo_test_images=10_000, zoo_batch=256, zoo_width=1.0, zoo_seeds=3,
        zoo_labels=("true", "permuted"),        zoo_epochs=ZOO_TARGET_EPOCHS, probe_epochs=2, parallel=(1, 4, 12),
        imagenet_offsets=STUDY_OFFSETS, imagenet_images=4096, imagenet_size=224, imagenet_batch=64,
        imagenet_reference_images=2),
    "tiny": Sizes(
        # k=16 and 32 hold a few patches only: deriving a p x p covariance exactly costs seconds at p = 1,024
        # (k=32 grey); k=32 in colour (p = 3,072) is left to the full size. Offset 10 finds no pairs at k=32.
        patch_cases={3: ((1, 3), [(4, 12, 12), (1, 15, 11)]),
                     7: ((1, 3), [(2, 16, 16), (1, 13, 17)]),
                     16: ((1, 3), [(1, 20, 20), (1, 19, 21)]),
                     32: ((1,), [(1, 36, 36), (1, 33, 35)])},
        offsets=(1, 10), notebook_kernel=3, notebook_preprocessing={"resize": 32, "crop": 32},
        # bf16 convolutions are slow on a CPU without bf16 instructions: as few images as two steps need.
        train_images=32, train_batch=16, train_width=0.125,
        zoo_images=128, zoo_test_images=32, zoo_batch=32, zoo_width=0.125, zoo_seeds=1, zoo_labels=("true",),
        zoo_epochs=1, probe_epochs=1, parallel=(1, 2),
        imagenet_offsets=(2,), imagenet_images=4, imagenet_size=32, imagenet_batch=2, imagenet_reference_images=1),
}


@dataclass
class Row:
    name: str
    device: str = ""
    reference: str = ""
    status: str = FAIL
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)


class Outcome(Exception):
    """A check's result, raised or returned: what the device gave, what the CPU or the reference gave."""

    def __init__(self, device: str, reference: str, ok: bool | None, details: list[str] | None = None):
        super().__init__(device)
        self.device, self.reference, self.ok, self.details = device, reference, ok, details or []


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def describe(caught: warnings.WarningMessage) -> str:
    return f"{caught.category.__name__}: {caught.message} ({caught.filename}:{caught.lineno})"


class Checks:
    """Runs each check with its warnings recorded, prints a line as each row ends, then the table."""

    def __init__(self, device: str, sizes: Sizes, inject: str | None, table_path: Path | None = None):
        self.device, self.sizes, self.inject, self.table_path = device, sizes, inject, table_path
        self.rows: list[Row] = []
        self.cache: dict = {}

    def run(self, name: str, check: Callable[[], Outcome]) -> Row:
        row = Row(name)
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome = check()
                self.synchronise()
            except Outcome as raised:
                outcome = raised
            except Exception as error:  # a check that breaks is a failed row, and the run goes on
                outcome = Outcome(f"error: {type(error).__name__}: {error}", "", False,
                                  traceback.format_exc().splitlines())
        row.seconds = time.perf_counter() - started
        row.device, row.reference, row.details = outcome.device, outcome.reference, list(outcome.details)
        row.status = NOT_APPLICABLE if outcome.ok is None else PASS if outcome.ok else FAIL
        if caught:
            row.status = FAIL
            row.details += [f"warning: {describe(w)}" for w in caught]
        self.rows.append(row)
        print(f"[{len(self.rows)}] {row.status:4} {row.name}: {row.device} | {row.reference} ({row.seconds:.1f} s)",
              flush=True)
        if self.table_path:  # rewritten after every row: a run stopped by a time limit leaves the rows it finished
            self.table_path.write_text(self.table() + "\n")
        return row

    def synchronise(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def table(self) -> str:
        lines = ["| check | device | CPU / reference | result | time |", "| --- | --- | --- | --- | ---: |"]
        lines += [f"| {cell(row.name)} | {cell(row.device)} | {cell(row.reference)} | {row.status} | "
                  f"{row.seconds:.1f} s |" for row in self.rows]
        return "\n".join(lines)


# ---------------------------------------------------------------- environment

def check_environment(checks: Checks) -> Outcome:
    """Import what the checks use (under the warning recorder) and name the machine."""
    import torch

    for module in ("firstlayer_zoo.notebook", "firstlayer_zoo.patchstats", "firstlayer_zoo.training",
                   "firstlayer_zoo.tables", "train_speed", "safetensors.torch", "pandas", "pyarrow", "scipy"):
        importlib.import_module(module)
    cores = os.cpu_count()
    if checks.device == "cuda" and not torch.cuda.is_available():
        raise Outcome("error: torch sees no GPU here (--device cpu runs the tiny CPU mode)", "", False)
    if checks.device == "cuda":
        name = torch.cuda.get_device_name()
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        device = f"{name}, {memory:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        device = f"CPU only ({cpu_model()})"
    return Outcome(device, f"torch {torch.__version__}, Python {platform.python_version()}, {cores} cores", True)


def cpu_model() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.machine()


# ---------------------------------------------------------------- patch statistics

def engines() -> tuple[str | None, ...]:
    """Every engine PatchMoments offers (patchstats.ENGINES); None is the call without an engine argument."""
    from firstlayer_zoo import patchstats

    return tuple(getattr(patchstats, "ENGINES", (None,)))


def engine_label(engine: str | None) -> str:
    return "" if engine is None else f" [{engine}]"


def patch_images(kernel_size: int, in_chans: int, shapes, seed: int) -> list:
    """Groups of same-sized uint8 (N, c, H, W) images: uniform pixels, the first image of each group only 0 and 255
    (the largest products the sums can hold)."""
    import torch

    rng = np.random.default_rng(seed)
    groups = []
    for count, height, width in shapes:
        images = rng.integers(0, 256, (count, in_chans, height, width), dtype=np.uint8)
        images[0] = rng.choice(np.array([0, 255], dtype=np.uint8), images[0].shape)
        groups.append(torch.from_numpy(images))
    return groups


def moments(groups, kernel_size: int, in_chans: int, device: str, offsets, engine: str | None,
            one_at_a_time: bool = False, threads: int = 1):
    """(mean, covariance, cross-covariances) of PatchMoments over the groups, on `device`."""
    from firstlayer_zoo.patchstats import PatchMoments

    options = {} if engine is None else {"engine": engine}
    accumulated = PatchMoments(kernel_size, in_chans, device, threads=threads, offsets=offsets, **options)
    for group in groups:
        for part in (group.split(1) if one_at_a_time else (group,)):
            accumulated.update(part)
    mean, covariance = accumulated.pixel_covariance()
    return mean, covariance, accumulated.pixel_cross_covariances(), accumulated.n_patches


def differences(ours: np.ndarray, theirs: np.ndarray) -> str:
    """'identical', or where and how much two arrays differ (NaN where both are NaN counts as equal)."""
    if ours.shape != theirs.shape:
        return f"shape {ours.shape} vs {theirs.shape}"
    if np.array_equal(ours, theirs, equal_nan=True):
        return "identical"
    unequal = ~((ours == theirs) | (np.isnan(ours) & np.isnan(theirs)))
    gap = np.nanmax(np.abs(ours - theirs))
    return f"{int(unequal.sum())} of {ours.size} entries differ (largest {gap:.3g})"


def device_side(checks: Checks, groups: list) -> dict:
    """How the device's side runs: on a GPU, the groups there; on a CPU, one image at a time in two threads."""
    if checks.inject == "pixel":
        first = groups[0].clone()
        first[0, 0, 0, 0] = 254 if int(first[0, 0, 0, 0]) == 255 else int(first[0, 0, 0, 0]) + 1
        groups = [first, *groups[1:]]
    if checks.device == "cpu":
        return {"groups": groups, "one_at_a_time": True, "threads": 2}
    return {"groups": groups}


def one_ulp_off(found: tuple) -> tuple:
    """The device's results with one covariance entry and one C(d) entry the smallest step a float64 can take."""
    mean, covariance, cross, n_patches = found
    covariance, cross = covariance.copy(), cross.copy()
    covariance[0, -1] = np.nextafter(covariance[0, -1], np.inf)
    finite = np.flatnonzero(np.isfinite(cross))[0]
    cross.flat[finite] = np.nextafter(cross.flat[finite], np.inf)
    return mean, covariance, cross, n_patches


def patch_comparison(checks: Checks, kernel_size: int, engine: str | None) -> list[dict]:
    """Per channel count: the device's and the CPU's moments of the same images (cached for the C(d) row)."""
    key = ("patch", kernel_size, engine)
    if key not in checks.cache:
        channels, shapes = checks.sizes.patch_cases[kernel_size]
        offsets = checks.sizes.offsets
        cases = []
        for in_chans in channels:
            groups = patch_images(kernel_size, in_chans, shapes, seed=kernel_size * 10 + in_chans)
            device = moments(in_chans=in_chans, kernel_size=kernel_size, device=checks.device, offsets=offsets,
                             engine=engine, **device_side(checks, groups))
            if checks.inject == "ulp":
                device = one_ulp_off(device)
            cpu = moments(groups, kernel_size, in_chans, "cpu", offsets, engine)
            default = cpu if engine is None else moments(groups, kernel_size, in_chans, "cpu", offsets, None)
            cases.append({"in_chans": in_chans, "device": device, "cpu": cpu, "default": default})
        checks.cache[key] = cases
    return checks.cache[key]


def colours(cases: list[dict]) -> str:
    return "+".join("grey" if case["in_chans"] == 1 else "colour" for case in cases)


def compare_cases(checks: Checks, cases: list[dict], parts: slice, what: str, engine: str | None) -> Outcome:
    found, ok = [], True
    for case in cases:
        label = "grey" if case["in_chans"] == 1 else "colour"
        versus_cpu = [differences(ours, theirs) for ours, theirs in zip(case["device"][parts], case["cpu"][parts])]
        versus_default = [differences(ours, theirs)
                          for ours, theirs in zip(case["cpu"][parts], case["default"][parts])]
        same = all(text == "identical" for text in versus_cpu + versus_default)
        ok &= same
        if not same:
            found.append(f"{label}: device vs cpu {versus_cpu}; cpu vs default engine {versus_default}")
    patches = sum(case["cpu"][3] for case in cases)
    device = f"{what} on {checks.device}, {patches:,} patches"
    reference = "cpu: identical" if ok else "cpu: DIFFERENT"
    if engine is not None:
        reference += ", = default engine on cpu" if ok else ""
    return Outcome(device, reference, ok, found)


def check_patch_sums(checks: Checks, kernel_size: int, engine: str | None) -> Outcome:
    cases = patch_comparison(checks, kernel_size, engine)
    return compare_cases(checks, cases, slice(0, 2), "mean, covariance", engine)


def check_cross_covariances(checks: Checks, kernel_size: int, engine: str | None) -> Outcome:
    cases = patch_comparison(checks, kernel_size, engine)
    offsets = ",".join(map(str, checks.sizes.offsets))
    return compare_cases(checks, cases, slice(2, 3), f"C(d) at d={offsets}, rows and columns", engine)


# ---------------------------------------------------------------- notebook API

def notebook_model(kernel_size: int):
    """A stem of 16 filters (stride 2) in front of a small head: random, seeded weights."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, kernel_size, stride=2), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))


def check_notebook(checks: Checks) -> Outcome:
    import pandas as pd

    import firstlayer_zoo

    model = notebook_model(checks.sizes.notebook_kernel)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        # A cache each: the cache's key does not name the device, so a second call would read the first's basis.
        for side, device in (("device", checks.device), ("cpu", "cpu")):
            results[side] = firstlayer_zoo.analyse(model, dataset="photos",
                                                   preprocessing=checks.sizes.notebook_preprocessing,
                                                   cache_dir=Path(folder) / side, device=device, name="gpu_check")
    largest, problems = 0.0, []
    for table in ("checkpoint", "profile", "fit"):
        ours, theirs = getattr(results["device"], table), getattr(results["cpu"], table)
        try:
            pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=NOTEBOOK_RTOL, atol=0)
        except AssertionError as error:
            problems.append(f"{table}: {error}")
        numeric = ours.select_dtypes("number").columns
        if len(numeric) and ours.shape == theirs.shape:
            gap = np.nanmax(np.abs(ours[numeric].to_numpy(float) - theirs[numeric].to_numpy(float)), initial=0.0)
            largest = max(largest, float(gap))
    rows = sum(len(getattr(results["cpu"], table)) for table in ("checkpoint", "profile", "fit"))
    k = checks.sizes.notebook_kernel
    device = f"analyse(model, 'photos', k={k}) on {checks.device}: 3 tables, {rows} rows"
    reference = f"cpu: largest difference {largest:.3g} (rtol {NOTEBOOK_RTOL:g})"
    return Outcome(device, reference, not problems, problems)


# ---------------------------------------------------------------- bf16 training step

def recorded_training(checks: Checks, arch: str) -> dict:
    """Train one run with the workflow's train() (bf16, 1 epoch), recording what its stem and layers computed."""
    key = ("training", arch)
    if key in checks.cache:
        return checks.cache[key]
    import torch
    from safetensors.torch import load_file

    import train_speed
    from firstlayer_zoo import training

    sizes = checks.sizes
    settings = {"arch": arch, "seed": 0, "labels": "true", "epochs": 1, "images": sizes.train_images,
                "test_images": sizes.train_batch, "batch": sizes.train_batch, "width": sizes.train_width,
                "device": checks.device, "precision": "bfloat16"}
    run = train_speed.benchmark_run(settings)
    data = train_speed.benchmark_data(run, settings)
    seen: dict = {"layers": {}}
    build_model = training.build_model

    def recording_build_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        stem = model.get_submodule(training.first_conv_name(model))
        seen["stem"] = stem

        def stem_forward(module, inputs, output):
            if torch.is_grad_enabled() and module.training and "input" not in seen:
                seen.update(input=inputs[0].detach().clone(), output=output.detach().clone(),
                            weight=module.weight.detach().clone(),
                            bias=None if module.bias is None else module.bias.detach().clone())
                output.register_hook(lambda grad: seen.setdefault("output_grad", grad.detach().clone()))
                # The parameter as it is now, on the device: this step's backward fills its gradient.
                module.weight.register_hook(lambda grad: seen.setdefault("weight_grad", grad.detach().clone()))

        def layer_forward(name):
            def hook(module, inputs, output):
                if torch.is_grad_enabled() and module.training:
                    seen["layers"].setdefault(name, output.dtype)
            return hook

        stem.register_forward_hook(stem_forward)
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module is not stem:
                module.register_forward_hook(layer_forward(name))
        return model

    with tempfile.TemporaryDirectory() as folder:
        outputs = {position: Path(folder) / f"{position}.safetensors" for position in run.steps}
        training.build_model = recording_build_model
        try:
            speed = training.train(run, data, outputs, progress=False)
        finally:
            training.build_model = build_model
        saved = {position: {name: tensor.dtype for name, tensor in load_file(path).items()}
                 for position, path in outputs.items()}
    seen.update(speed=speed, saved=saved)
    checks.cache[key] = seen
    return seen


def check_bf16_step(checks: Checks, arch: str) -> Outcome:
    import torch

    seen = recorded_training(checks, arch)
    stem = seen["stem"]
    float32 = {"stem input": seen["input"].dtype, "stem output": seen["output"].dtype,
               "stem weight": stem.weight.dtype, "stem weight gradient": seen["weight_grad"].dtype}
    problems = [f"{what} is {dtype}" for what, dtype in float32.items() if dtype != torch.float32]
    problems += [f"{name} computes in {dtype}" for name, dtype in seen["layers"].items() if dtype != torch.bfloat16]
    saved = [f"epoch {position}: {name} saved as {dtype}" for position, tensors in seen["saved"].items()
             for name, dtype in tensors.items() if dtype.is_floating_point and dtype != torch.float32]
    problems += saved
    if not seen["speed"]["low_precision"]:
        problems.append("train() did not run under bf16 autocast")
    device = (f"train() {seen['speed']['steps']} steps on {seen['speed']['device']}: stem in/out/weight/grad "
              f"float32, {len(seen['layers'])} other layers bf16, checkpoints float32")
    return Outcome(device if not problems else "; ".join(problems[:3]), "expected: stem float32, rest bf16",
                   not problems, problems)


def check_stem_accuracy(checks: Checks, arch: str) -> Outcome:
    """The stem's output and weight gradient in the first training step against float64 on the CPU."""
    import torch

    seen = recorded_training(checks, arch)
    stem = seen["stem"]
    inputs = seen["input"].cpu().double()
    weight = seen["weight"].cpu().double()
    bias = None if seen["bias"] is None else seen["bias"].cpu().double()
    geometry = {"stride": stem.stride, "padding": stem.padding, "dilation": stem.dilation, "groups": stem.groups}
    output = torch.nn.functional.conv2d(inputs, weight, bias, **geometry)
    gradient = torch.nn.grad.conv2d_weight(inputs, weight.shape, seen["output_grad"].cpu().double(), **geometry)

    def relative(ours, reference):
        return float((ours.cpu().double() - reference).abs().max() / reference.abs().max())

    output_error, gradient_error = relative(seen["output"], output), relative(seen["weight_grad"], gradient)
    ok = output_error <= STEM_OUTPUT_TOLERANCE and gradient_error <= STEM_GRADIENT_TOLERANCE
    device = f"stem output {output_error:.2g}, weight gradient {gradient_error:.2g} from float64"
    reference = f"cpu float64: <= {STEM_OUTPUT_TOLERANCE:g}, <= {STEM_GRADIENT_TOLERANCE:g} (float32, not TF32)"
    return Outcome(device, reference, ok)


# ---------------------------------------------------------------- the paper's zoo

def train_worker(settings: dict) -> dict:
    """One run of the zoo (train_speed.train_one) in a worker process, with the warnings it raised."""
    import train_speed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_speed.train_one(settings)
    return {**result, "arch": settings["arch"], "warnings": [describe(w) for w in caught]}


def zoo_runs(checks: Checks, epochs: int) -> list[dict]:
    """The zoo's runs, the architectures interleaved (so the first few runs cover both)."""
    sizes = checks.sizes
    return [{"arch": arch, "seed": seed, "labels": labels, "epochs": epochs, "images": sizes.zoo_images,
             "test_images": sizes.zoo_test_images, "batch": sizes.zoo_batch, "width": sizes.zoo_width,
             "device": checks.device, "precision": "auto", "threads": 1}
            for seed in range(sizes.zoo_seeds) for labels in sizes.zoo_labels
            for arch in ("vgg11_bn_cifar", "resnet18_cifar")]


def is_target_zoo(checks: Checks) -> bool:
    sizes = checks.sizes
    return (checks.device == "cuda" and len(zoo_runs(checks, 1)) == ZOO_TARGET_RUNS
            and sizes.zoo_epochs == ZOO_TARGET_EPOCHS and sizes.zoo_images == ZOO_TARGET_IMAGES)


def check_zoo(checks: Checks, parallel: int) -> Outcome:
    """N runs at once, each its own process as N train_run jobs sharing the device are; the whole zoo where N
    reaches its size, otherwise its first runs for a few epochs, from which the zoo's time is extrapolated."""
    import train_speed

    sizes = checks.sizes
    zoo = zoo_runs(checks, sizes.zoo_epochs)
    whole = parallel >= len(zoo)
    archs = sorted({run["arch"] for run in zoo})
    runs = zoo if whole else zoo_runs(checks, sizes.probe_epochs)[:max(parallel, len(archs))]
    started = time.perf_counter()
    with train_speed.GpuSampler() as gpu, ProcessPoolExecutor(
            parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(train_worker, runs))
    wall = time.perf_counter() - started
    speeds = []
    for arch in archs:
        rates = [result["images_per_s"] for result in results if result["arch"] == arch]
        spread = f" ({min(rates):,.0f}-{max(rates):,.0f})" if len(rates) > 1 else ""
        speeds.append(f"{arch} {np.median(rates):,.0f}{spread}")
    if whole:
        zoo_time = f"zoo {wall:.1f} s"
        checks.cache.setdefault("zoo_walls", []).append((parallel, wall))
    else:
        # Each zoo run takes what a probe run of its architecture took per epoch, N at a time (training only).
        per_epoch = {arch: np.mean([r["seconds"] for r in results if r["arch"] == arch]) / sizes.probe_epochs
                     for arch in archs}
        estimate = sum(per_epoch[run["arch"]] * sizes.zoo_epochs for run in zoo) / parallel
        zoo_time = (f"zoo est. {estimate:.0f} s of training ({len(runs)} runs x {sizes.probe_epochs} epochs "
                    f"took {wall:.0f} s)")
    stats = gpu.stats()
    utilisation = "GPU util n/a" if stats is None else (
        f"GPU util mean {stats['mean']:.0f}%, median {stats['median']:.0f}%, "
        + ("" if np.isnan(stats["memory_gib"]) else f"{stats['memory_gib']:.1f} GiB"))
    device = f"img/s a run: {', '.join(speeds)}; {zoo_time}; {utilisation}"
    caught = [f"warning in {result['run']}: {text}" for result in results for text in result["warnings"]]
    epochs = sizes.zoo_epochs
    reference = (f"{len(zoo)} runs x {epochs} epochs x {sizes.zoo_images:,} images; target < {ZOO_TARGET_S:.0f} s"
                 if is_target_zoo(checks) else f"{len(zoo)} runs x {epochs} epochs x {sizes.zoo_images:,} images")
    return Outcome(device, reference, not caught, caught)


def check_zoo_target(checks: Checks) -> Outcome:
    walls = checks.cache.get("zoo_walls", [])
    if not is_target_zoo(checks):
        return Outcome(f"not applicable: {checks.device}, {len(zoo_runs(checks, 1))} runs x "
                       f"{checks.sizes.zoo_epochs} epochs", f"< {ZOO_TARGET_S:.0f} s on one H100/H200", None)
    if not walls:
        return Outcome(f"not measured: no --parallel reached {ZOO_TARGET_RUNS}", f"< {ZOO_TARGET_S:.0f} s", False)
    parallel, wall = min(walls, key=lambda item: item[1])
    met = wall < ZOO_TARGET_S
    return Outcome(f"{wall:.1f} s at --parallel {parallel}: {'met' if met else 'NOT met'}",
                   f"< {ZOO_TARGET_S:.0f} s on one H100/H200", met)


# ---------------------------------------------------------------- ImageNet-sized patch statistics

def check_imagenet(checks: Checks, engine: str | None) -> Outcome:
    """Synthetic 224x224 colour images at k=16 with the study's offsets: the rate on the device (the batches
    handed over from the host as a loader would), an extrapolation, and the CPU on the first few images."""
    import torch

    from firstlayer_zoo.patchstats import PatchMoments

    sizes = checks.sizes
    offsets = sizes.imagenet_offsets
    size, batch = sizes.imagenet_size, sizes.imagenet_batch
    rng = np.random.default_rng(16)
    # A pool of distinct batches, cycled: generating every image would time numpy, not the engine.
    pool = [torch.from_numpy(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8))
            for _ in range(max(1, min(16, sizes.imagenet_images // batch)))]
    options = {} if engine is None else {"engine": engine}
    accumulated = PatchMoments(16, 3, checks.device, offsets=offsets, **options)
    accumulated.update(pool[0][:1])  # start-up (kernels, allocations) out of the timing
    checks.synchronise()
    started = time.perf_counter()
    for index in range(sizes.imagenet_images // batch):
        accumulated.update(pool[index % len(pool)])
    checks.synchronise()
    accumulated.pixel_covariance()
    accumulated.pixel_cross_covariances()
    seconds = time.perf_counter() - started
    images = (sizes.imagenet_images // batch) * batch
    rate = images / seconds
    subset = [pool[0][:sizes.imagenet_reference_images]]
    on_device = moments(subset, 16, 3, checks.device, offsets, engine)
    cpu_started = time.perf_counter()
    on_cpu = moments(subset, 16, 3, "cpu", offsets, engine)
    cpu_rate = len(subset[0]) / (time.perf_counter() - cpu_started)
    found = [differences(ours, theirs) for ours, theirs in zip(on_device[:3], on_cpu[:3])]
    ok = all(text == "identical" for text in found)
    device = (f"{images:,} images {size}x{size}, d={','.join(map(str, offsets))}: {rate:,.1f} images/s; "
              f"est. {IMAGENET_VAL / rate:,.0f} s for 50,000, {IMAGENET_TRAIN / rate / 60:,.0f} min for 1.28M")
    reference = (f"cpu on {len(subset[0])}: {'identical' if ok else 'DIFFERENT'}, {cpu_rate:,.2f} images/s")
    return Outcome(device, reference, ok, [] if ok else [f"device vs cpu (mean, covariance, C(d)): {found}"])


# ---------------------------------------------------------------- main

def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown (no git)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=sorted(SIZES), help="full on cuda, tiny on cpu by default")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups of rows")
    parser.add_argument("--parallel", type=int, nargs="+", help="zoo: runs at once (full: 1 4 12; tiny: 1 4)")
    parser.add_argument("--zoo-epochs", type=int, help="zoo: epochs of the whole zoo (full: 30)")
    parser.add_argument("--imagenet-images", type=int, help="ImageNet-sized benchmark: images timed (full: 4096)")
    parser.add_argument("--table", type=Path, help="also write the table (Markdown) here, after every row")
    parser.add_argument("--kernels", type=int, nargs="+", help="patch rows: only these kernel sizes (3 7 16 32)")
    # Tests only: the device's side of the patch rows sees one pixel one grey level off, or returns one covariance
    # and one C(d) entry one float64 step off.
    parser.add_argument("--inject", choices=["pixel", "ulp"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = SIZES[args.size or ("full" if args.device == "cuda" else "tiny")]
    overrides = {"parallel": tuple(args.parallel) if args.parallel else None, "zoo_epochs": args.zoo_epochs,
                 "imagenet_images": args.imagenet_images}
    sizes = replace(sizes, **{key: value for key, value in overrides.items() if value})
    checks = Checks(args.device, sizes, args.inject, args.table)
    started = time.perf_counter()
    print(f"gpu_check on {socket.gethostname()}, commit {commit()}, --device {args.device}, "
          f"{args.size or ('full' if args.device == 'cuda' else 'tiny')} sizes", flush=True)
    environment = checks.run("environment", lambda: check_environment(checks))
    wanted = set(args.only or GROUPS)
    if not environment.device.startswith("error:"):  # a warning at import fails its row; the checks still run
        for engine in engines() if "patch" in wanted or "cross" in wanted else ():
            for k in [k for k in sizes.patch_cases if not args.kernels or k in args.kernels]:
                channels = colours([{"in_chans": c} for c in sizes.patch_cases[k][0]])
                if "patch" in wanted:
                    checks.run(f"patch sums k={k} {channels}{engine_label(engine)}",
                               lambda k=k, engine=engine: check_patch_sums(checks, k, engine))
                if "cross" in wanted:
                    checks.run(f"C(d) k={k} {channels}{engine_label(engine)}",
                               lambda k=k, engine=engine: check_cross_covariances(checks, k, engine))
        if "notebook" in wanted:
            checks.run("notebook API analyse()", lambda: check_notebook(checks))
        if "training" in wanted:
            for arch in ("resnet18_cifar", "vgg11_bn_cifar"):
                checks.run(f"bf16 training step {arch}", lambda arch=arch: check_bf16_step(checks, arch))
                checks.run(f"stem float32 {arch}", lambda arch=arch: check_stem_accuracy(checks, arch))
        if "imagenet" in wanted:
            for engine in engines():
                checks.run(f"ImageNet-sized k=16 patch sums{engine_label(engine)}",
                           lambda engine=engine: check_imagenet(checks, engine))
        if "zoo" in wanted:
            for parallel in sizes.parallel:
                checks.run(f"{len(zoo_runs(checks, 1))}-run zoo --parallel {parallel}",
                           lambda parallel=parallel: check_zoo(checks, parallel))
            checks.run("zoo target (12 runs, 30 epochs, < 3 min)", lambda: check_zoo_target(checks))
    print(f"\n{checks.table()}\n")
    failed = [row for row in checks.rows if row.status == FAIL]
    for row in checks.rows:
        for line in row.details:
            print(f"{row.name}: {line}")
    print(f"{len(checks.rows)} rows, {len(failed)} failed, {time.perf_counter() - started:.1f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
