"""Benchmark: the paper's 12-run CIFAR zoo trained by the workflow's own training code, several runs at once.

VGG-11-BN and ResNet-18 (CIFAR form) x 3 seeds x true and permuted labels,
30 epochs over 50,000 generated 32x32 images (and 10,000 test images), batch
256, checkpoints kept at the init and the last epoch, as `train_run` jobs
keep them. `--parallel N` runs N of them at once, each in its own process, as
N `train_run` jobs sharing one GPU do (`--resources train_slots=N`). Prints
images per second per run, the zoo's wall time, and the GPU's utilisation
sampled with nvidia-smi while the zoo trains.

  python benchmarks/train_speed.py --parallel 4                # one GPU
  python benchmarks/train_speed.py --device cpu --images 256 --test-images 64 --epochs 1 --width 0.125
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from firstlayer_zoo.preprocessing import Preprocessing  # noqa: E402
from firstlayer_zoo.paths import checkpoint_file  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class GpuSampler:
    """GPU utilisation (and memory used) once a second, in a thread, while the zoo trains.

    From nvidia-smi; where there is none, from torch.cuda.utilization (which needs pynvml), without memory.
    """

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.source = "nvidia-smi" if shutil.which("nvidia-smi") else _torch_utilisation_source()
        self.available = self.source is not None

    def __enter__(self):
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if self.available:
            self._thread.start()
        return self

    def _sample(self):
        while self._running:
            if self.source == "nvidia-smi":
                result = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                         "--format=csv,noheader,nounits", "--id=0"], capture_output=True, text=True)
                if result.returncode == 0:
                    utilisation, memory = (float(value) for value in result.stdout.strip().split(","))
                    self.samples.append((utilisation, memory))
            else:
                import torch

                self.samples.append((float(torch.cuda.utilization()), float("nan")))
            time.sleep(1.0)

    def __exit__(self, *exc):
        self._running = False
        if self.available:
            self._thread.join()

    def stats(self) -> dict | None:
        """Mean and median utilisation (%), the most memory used (GiB; NaN if unknown), samples; None: none."""
        if not self.samples:
            return None
        utilisation, memory = np.array(self.samples).T
        return {"mean": utilisation.mean(), "median": np.median(utilisation), "memory_gib": memory.max() / 1024,
                "samples": len(utilisation), "source": self.source}

    def summary(self) -> str:
        stats = self.stats()
        if stats is None:
            return "GPU utilisation: not measured (no nvidia-smi or pynvml here)"
        return (f"GPU utilisation ({stats['source']}, {stats['samples']} samples at 1 s): mean {stats['mean']:.0f}%, "
                f"median {stats['median']:.0f}%; memory used up to {stats['memory_gib']:.1f} GiB")


def _torch_utilisation_source() -> str | None:
    """"torch" where torch can read the GPU's utilisation (a GPU and pynvml), else None."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        torch.cuda.utilization()
    except Exception:  # no pynvml, or NVML not answering: utilisation stays unmeasured
        return None
    return "torch"


def generated(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, count)


def benchmark_run(settings: dict):
    """The workflow's TrainRun for one run of the benchmark (checkpoints at the init and the last epoch)."""
    from firstlayer_zoo.train_runs import TrainRun

    return TrainRun(zoo="benchmark", arch=settings["arch"], seed=settings["seed"], labels=settings["labels"],
                    dataset="generated", preprocessing=Preprocessing(mean=CIFAR_MEAN, std=CIFAR_STD),
                    steps=(0, settings["epochs"]), model_kwargs={"width": settings["width"]}, task="labelled",
                    unit="epoch", test_dataset="generated_test", batch_size=settings["batch"], lr=0.01,
                    momentum=0.0, device=settings["device"], precision=settings["precision"])


def benchmark_data(run, settings: dict):
    """The run's generated training and test images, labelled under its regime by the workflow's labelled_data."""
    from firstlayer_zoo.training import labelled_data

    return labelled_data(run, *generated(settings["images"], 0), generated(settings["test_images"], 1))


def train_one(settings: dict) -> dict:
    """One run in this worker process, with the workflow's TrainRun and train()."""
    import torch

    from firstlayer_zoo.training import train

    torch.set_num_threads(settings["threads"])
    run = benchmark_run(settings)
    data = benchmark_data(run, settings)
    with tempfile.TemporaryDirectory() as folder:
        outputs = {position: Path(checkpoint_file(folder, run.unit, position)) for position in run.steps}
        speed = train(run, data, outputs, progress=False)
    return {"run": run.name, **speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4, help="runs training at once, one process each")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--test-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--archs", nargs="+", default=["vgg11_bn_cifar", "resnet18_cifar"])
    parser.add_argument("--labels", nargs="+", default=["true", "permuted"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = parser.parse_args()

    runs = [{"arch": arch, "seed": seed, "labels": labels, "epochs": args.epochs, "images": args.images,
             "test_images": args.test_images, "batch": args.batch, "width": args.width, "device": args.device,
             "precision": args.precision, "threads": args.threads}
            for arch in args.archs for seed in range(args.seeds) for labels in args.labels]
    print(f"{len(runs)} runs, {args.parallel} at once: {args.epochs} epoch(s) over {args.images:,} generated "
          f"32x32 images (test {args.test_images:,}), batch {args.batch}, width {args.width:g}", flush=True)
    started = time.perf_counter()
    with GpuSampler() as gpu, ProcessPoolExecutor(args.parallel,
                                                  mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(train_one, runs))
    wall = time.perf_counter() - started
    print("| run | device | bf16 | steps | seconds | images/s |\n| --- | --- | --- | --- | --- | --- |")
    for result in results:
        print(f"| {result['run']} | {result['device']} | {result['low_precision']} | {result['steps']} | "
              f"{result['seconds']:.1f} | {result['images_per_s']:,.0f} |")
    trained = sum(result["steps"] * args.batch for result in results)
    print(f"zoo: {wall:.1f} s wall time (process start-up and data generation included), "
          f"{trained / wall:,.0f} images/s over all runs")
    print(gpu.summary())


if __name__ == "__main__":
    main()
