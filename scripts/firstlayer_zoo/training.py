"""Training the `train` zoo source's runs (zoo_sources/train.py): small timm CNNs, their initialisation kept.

The task: which photo did a random crop come from. A fixed, seeded sample of
crops is drawn once per run, so that random labels (one fixed random class per
crop) are a well-defined memorisation task, as in Zhang et al. 2017.
torch is imported where a run is trained: planning builds TrainRuns without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .atomic import atomic_path
from .preprocessing import Preprocessing
from .stems import declared_first_conv

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainRun:
    """One training run: an architecture, a seed and a label regime."""

    zoo: str
    arch: str
    seed: int
    labels: str  # "true" or "random"
    dataset: str
    preprocessing: Preprocessing
    steps: tuple[int, ...]
    model_kwargs: dict = field(default_factory=dict)
    crop_size: int = 32
    n_samples: int = 2048
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0

    @classmethod
    def from_dict(cls, values: dict) -> "TrainRun":
        values = dict(values)
        values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        values["steps"] = tuple(values["steps"])
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain values (a rule's params), read back by from_dict."""
        return {**asdict(self), "preprocessing": self.preprocessing.to_dict(), "steps": list(self.steps)}

    def metadata(self, step: int, first_conv: str, stride: int) -> dict[str, str]:
        """String metadata stored in each safetensors header."""
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
            "hyperparameters": json.dumps(
                {k: v for k, v in asdict(self).items()
                 if k in ("crop_size", "n_samples", "batch_size", "lr", "momentum", "weight_decay")},
                sort_keys=True,
            ),
        }


def first_conv_name(model: torch.nn.Module) -> str:
    """The stem a timm model's pretrained_cfg names."""
    name = declared_first_conv(model.pretrained_cfg)
    if not name:
        raise ValueError(f"{type(model).__name__} declares no first_conv in its pretrained_cfg")
    return name


def build_model(arch: str, num_classes: int, in_chans: int, model_kwargs: dict) -> torch.nn.Module:
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                             in_chans=in_chans, **model_kwargs)


def sample_crops(images: Sequence[np.ndarray], run: TrainRun) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed sample of crops (uint8 N, c, s, s) and their labels under the run's regime."""
    import torch

    rng = np.random.default_rng(run.seed)
    size = run.crop_size
    sources = rng.integers(0, len(images), run.n_samples)
    crops = np.empty((run.n_samples, images[0].shape[0], size, size), dtype=np.uint8)
    for index, source in enumerate(sources):
        _, height, width = images[source].shape
        top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        crops[index] = images[source][:, top:top + size, left:left + size]
    if run.labels == "true":
        labels = sources
    elif run.labels == "random":
        labels = rng.integers(0, len(images), run.n_samples)
    else:
        raise ValueError(f"labels must be 'true' or 'random', not {run.labels!r}")
    return torch.from_numpy(crops), torch.from_numpy(labels.astype(np.int64))


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def train(run: TrainRun, images: Sequence[np.ndarray], outputs: dict[int, Path],
          progress: bool = True) -> None:
    """Train one run and save a safetensors checkpoint at each step in `outputs` (0 = init)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(run.seed)
    crops, labels = sample_crops(images, run)
    n_classes = len(images)
    mean = torch.tensor(run.preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(run.preprocessing.std).view(1, -1, 1, 1)
    inputs = (crops.float() / 255.0 - mean) / std

    model = build_model(run.arch, n_classes, run.preprocessing.in_chans, run.model_kwargs)
    stem = first_conv_name(model)
    stride = model.get_submodule(stem).stride[0]
    optimiser = torch.optim.SGD(model.parameters(), lr=run.lr, momentum=run.momentum,
                                weight_decay=run.weight_decay)
    generator = torch.Generator().manual_seed(run.seed)
    last = max(outputs)
    if 0 in outputs:
        save_checkpoint(model, outputs[0], run.metadata(0, stem, stride))
    model.train()
    bar = tqdm(range(1, last + 1), desc=f"train {run.arch} seed {run.seed} {run.labels} labels", disable=not progress, mininterval=2)
    for step in bar:
        batch = torch.randint(0, len(inputs), (run.batch_size,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step in outputs:
            save_checkpoint(model, outputs[step], run.metadata(step, stem, stride))
