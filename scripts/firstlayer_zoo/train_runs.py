"""What planning knows of a training run without importing torch: its name and its checkpoint files."""

from __future__ import annotations

# What names a run; everything else in its config entry is a hyperparameter.
RUN_IDENTITY = ("zoo", "arch", "model_kwargs", "seed", "labels", "dataset", "preprocessing", "steps")


def hyperparameters(run: dict) -> dict:
    return {key: value for key, value in run.items() if key not in RUN_IDENTITY}


def run_name(arch: str, width: float | None, seed: int, labels: str) -> str:
    """`<arch>[-w<width>]-s<seed>-<labels>`: the width only where the config gives one."""
    widened = "" if width is None else f"-w{width:g}"
    return f"{arch}{widened}-s{seed}-{labels}"


def checkpoint_file(unit: str, position: int) -> str:
    """A run's checkpoint at `position` (steps or epochs, the run's unit) in its folder; 0 is the initialisation."""
    return f"{unit}{position:06d}.safetensors"
