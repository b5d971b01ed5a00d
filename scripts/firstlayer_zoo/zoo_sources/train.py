"""The `train` zoo source: small timm CNNs trained by the workflow (training.py trains them, rule train_run)."""

from __future__ import annotations

import json

from ..checkpoint_io import read_tensor
from ..meta_models import timm_stem_geometry
from ..paths import step_file
from ..preprocessing import Preprocessing
from ..records import CheckpointSpec
from ..stems import Stem, validate_conv_weight
from ..training import TrainRun
from ..zoo_source import ZooSource, register


@register
class TrainSource(ZooSource):
    """Small timm CNNs trained by the workflow, every (arch, seed, labels), init kept."""

    source = "train"

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.options["preprocessing"])

    def _runs(self) -> list[dict]:
        runs = []
        for arch in self.options["archs"]:
            for seed in self.options["seeds"]:
                for labels in self.options["labels"]:
                    runs.append({
                        "zoo": self.name,
                        "arch": arch["arch"],
                        "model_kwargs": arch.get("model_kwargs", {}),
                        "seed": seed,
                        "labels": labels,
                        "dataset": self.options["dataset"],
                        "preprocessing": self.preprocessing.to_dict(),
                        "steps": sorted({0, *self.options["steps"]}),
                        **self.options["training"],
                    })
        return runs

    @staticmethod
    def run_name(run: dict) -> str:
        return f"{run['arch']}-s{run['seed']}-{run['labels']}"

    def run_dir(self, run: dict) -> str:
        return self.paths.run_dir(self.name, self.run_name(run))

    def runs(self) -> dict[str, TrainRun]:
        return {self.run_name(run): TrainRun.from_dict(run) for run in self._runs()}

    def input_files(self, specs: list[CheckpointSpec]) -> list[str]:
        """The run folders, which rule train_run makes."""
        return sorted({self.paths.run_dir(spec.zoo, spec.run) for spec in specs})

    def checkpoints(self) -> list[CheckpointSpec]:
        prep = self.preprocessing
        specs = []
        for run in self._runs():
            key = json.dumps(["timm", run["arch"], run["model_kwargs"], prep.in_chans], sort_keys=True)
            geometry = self.cache.get(
                key, lambda: timm_stem_geometry(run["arch"], run["model_kwargs"], prep.in_chans))
            run_dir = self.run_dir(run)
            for step in run["steps"]:
                if step == 0:
                    continue
                specs.append(CheckpointSpec(
                    zoo=self.name,
                    name=f"{self.run_name(run)}-step{step:06d}",
                    source=self.source,
                    arch=run["arch"],
                    locator=step_file(run_dir, step),
                    first_conv=geometry["first_conv"],
                    kernel_size=geometry["kernel_size"],
                    in_chans=geometry["in_chans"],
                    dataset=run["dataset"],
                    preprocessing=prep,
                    init_locator=step_file(run_dir, 0),
                    stride=geometry["stride"],
                    step=step,
                    seed=run["seed"],
                    labels=run["labels"],
                    run=self.run_name(run),
                ))
        return specs

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        key = f"{spec.first_conv}.weight"
        weight = validate_conv_weight(read_tensor(spec.locator, key)[1], spec.uri)
        init = validate_conv_weight(read_tensor(spec.init_locator, key)[1], spec.init_locator)
        return Stem(weight=weight, init=init, stride=spec.stride,
                    first_conv=spec.first_conv)
