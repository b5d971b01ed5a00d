"""The `train` zoo source: CNNs trained by the workflow (training.py trains them, rule train_run)."""

from __future__ import annotations

import json

from ..checkpoint_io import read_conv_weight, safetensors_metadata
from ..meta_models import cached_stem_geometry
from ..paths import checkpoint_file, checkpoint_stem
from ..preprocessing import Preprocessing
from ..records import CheckpointSpec
from ..stems import Stem
from ..train_runs import EVALUATION, TrainRun
from .base import ZooSource, register


@register
class TrainSource(ZooSource):
    """CNNs trained by the workflow (timm models or the paper's CIFAR nets), every (arch, seed, labels), init kept."""

    source = "train"
    dataset_options = ("dataset", "test_dataset")
    spec_fields = {"width": float, "hyperparameters": str}
    # Measured when the checkpoint was kept (training.py), read from its header.
    stem_fields = {name: float for name in EVALUATION}

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.options["preprocessing"])

    @property
    def unit(self) -> str:
        """Checkpoints are kept at training steps, or at epochs where the config lists `epochs`."""
        return "epoch" if "epochs" in self.options else "step"

    def runs(self) -> dict[str, TrainRun]:
        runs = {}
        for arch in self.options["archs"]:
            width = {"width": arch["width"]} if "width" in arch else {}
            for seed in self.options["seeds"]:
                for labels in self.options["labels"]:
                    run = TrainRun.from_dict({
                        "zoo": self.name,
                        "arch": arch["arch"],
                        "model_kwargs": {**arch.get("model_kwargs", {}), **width},
                        "seed": seed,
                        "labels": labels,
                        "dataset": self.options["dataset"],
                        "preprocessing": self.preprocessing.to_dict(),
                        "task": self.options.get("task", "photo_crops"),
                        "test_dataset": self.options.get("test_dataset"),
                        "unit": self.unit,
                        "steps": sorted({0, *self.options[self.unit + "s"]}),
                        **self.options["training"],
                    })
                    if run.name in runs:
                        raise ValueError(f"zoos.{self.name}.archs: two entries train the same run {run.name}; give "
                                         f"{run.arch} once per width (different model_kwargs need another zoo)")
                    runs[run.name] = run
        return runs

    def input_files(self, specs: list[CheckpointSpec]) -> list[str]:
        """The run folders, which rule train_run makes."""
        return sorted({self.paths.run_dir(spec.zoo, spec.run) for spec in specs})

    def checkpoints(self) -> list[CheckpointSpec]:
        prep = self.preprocessing
        specs = []
        for name, run in self.runs().items():
            geometry = cached_stem_geometry(self.cache, run.arch, run.model_kwargs, prep.in_chans)
            run_dir = self.paths.run_dir(self.name, name)
            for step in run.steps:
                if step == 0:
                    continue
                specs.append(CheckpointSpec(
                    zoo=self.name,
                    name=f"{name}-{checkpoint_stem(run.unit, step)}",
                    source=self.source,
                    arch=run.arch,
                    locator=checkpoint_file(run_dir, run.unit, step),
                    first_conv=geometry["first_conv"],
                    kernel_size=geometry["kernel_size"],
                    in_chans=geometry["in_chans"],
                    dataset=run.dataset,
                    preprocessing=prep,
                    init_locator=checkpoint_file(run_dir, run.unit, 0),
                    stride=geometry["stride"],
                    step=step,
                    seed=run.seed,
                    labels=run.labels,
                    run=name,
                    extra={"width": run.model_kwargs.get("width"),
                           "hyperparameters": run.hyperparameters_json},
                ))
        return specs

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        key = f"{spec.first_conv}.weight"
        weight, init = read_conv_weight(spec.locator, key), read_conv_weight(spec.init_locator, key)
        # Losses and accuracies measured when the checkpoint was kept (none in checkpoints trained before them).
        evaluation = json.loads(safetensors_metadata(spec.locator).get("evaluation", "{}"))
        return Stem(weight=weight, init=init, stride=spec.stride, first_conv=spec.first_conv,
                    meta={name: evaluation[name] for name in EVALUATION if name in evaluation})
