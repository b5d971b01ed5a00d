"""A training run as planning knows it, without importing torch: its record, its name, its hyperparameters.

training.py trains it (in the rule train_run's job); the `train` zoo source (zoo_sources/train.py) plans it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .preprocessing import Preprocessing

# `permuted` is the paper's "random labels": one fixed shuffle of the true labels over the
# examples, so every class keeps its count; `random` draws each label uniformly.
LABEL_REGIMES = ("true", "permuted", "random")
# What names a run; everything else in its config entry is a hyperparameter.
RUN_IDENTITY = ("zoo", "arch", "model_kwargs", "seed", "labels", "dataset", "preprocessing", "steps")
# What training.py measures when it keeps a checkpoint, in its header's "evaluation" (the `train` source reads them).
EVALUATION = ("train_loss", "train_accuracy", "test_accuracy")


def hyperparameters(run: dict) -> dict:
    return {key: value for key, value in run.items() if key not in RUN_IDENTITY}


@dataclass(frozen=True)
class TrainRun:
    """One training run: an architecture, a seed and a label regime, checkpoints kept at `steps` (in `unit`s)."""

    zoo: str
    arch: str
    seed: int
    labels: str  # one of LABEL_REGIMES
    dataset: str
    preprocessing: Preprocessing
    steps: tuple[int, ...]
    model_kwargs: dict = field(default_factory=dict)
    task: str = "photo_crops"
    unit: str = "step"  # "epoch": each epoch a fresh shuffle, the last partial batch dropped
    test_dataset: str | None = None
    crop_size: int = 32
    n_samples: int = 2048
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    freeze_stem: bool = False  # the stem stays at its initialisation (the paper's frozen first layer)
    device: str = "auto"
    precision: str = "auto"  # bfloat16 autocast on a GPU unless float32 is asked for

    @classmethod
    def from_dict(cls, values: dict) -> "TrainRun":
        values = dict(values)
        values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        values["steps"] = tuple(values["steps"])
        return cls(**values)

    @property
    def name(self) -> str:
        """`<arch>[-w<width>]-s<seed>-<labels>`: the width only where the config gives one."""
        width = self.model_kwargs.get("width")
        widened = "" if width is None else f"-w{width:g}"
        return f"{self.arch}{widened}-s{self.seed}-{self.labels}"

    @property
    def hyperparameters_json(self) -> str:
        """Everything but what names the run, as kept in its checkpoints' headers and in the analyses."""
        return json.dumps(hyperparameters(asdict(self)), sort_keys=True)

    def to_dict(self) -> dict:
        """Plain values (a rule's params), read back by from_dict."""
        return {**asdict(self), "preprocessing": self.preprocessing.to_dict(), "steps": list(self.steps)}

    def metadata(self, step: int, first_conv: str, stride: int, evaluation: dict) -> dict[str, str]:
        """String metadata stored in each safetensors header; `step` counts the run's unit."""
        return {
            "zoo": self.zoo,
            "arch": self.arch,
            "model_kwargs": json.dumps(self.model_kwargs, sort_keys=True),
            "seed": str(self.seed),
            "labels": self.labels,
            "step": str(step),
            "dataset": self.dataset,
            "preprocessing": json.dumps(self.preprocessing.to_dict(), sort_keys=True),
            "first_conv": first_conv,
            "stem_stride": str(stride),
            "hyperparameters": self.hyperparameters_json,
            "evaluation": json.dumps(evaluation, sort_keys=True),
        }
