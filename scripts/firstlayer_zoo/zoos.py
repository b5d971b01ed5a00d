"""Zoo sources: one class per source, registered by name, like timm's model registry.

A source turns its config entry into CheckpointSpecs at start-up, cheaply and
deterministically; the bytes of a checkpoint are read later, in its own job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, ClassVar

from .atomic import write_text
from .downloads import DownloadError
from .limits import Limits, applied
from .preprocessing import Preprocessing
from .records import CheckpointSpec
from .checkpoint_io import read_tensor
from .stems import Stem, StemError, read_safetensors_metadata, validate_conv_weight
from .train_runs import checkpoint_file, hyperparameters, run_name

ZOO_SOURCES: dict[str, type["ZooSource"]] = {}


def register(cls: type["ZooSource"]) -> type["ZooSource"]:
    ZOO_SOURCES[cls.source] = cls
    return cls


class GeometryCache:
    """Stem geometry (first_conv, kernel size, channels, stride) by a source-defined key.

    Building a model to read its stem costs seconds; the answer never changes
    for a given key, so it is kept in a JSON file beside the results.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._dirty = False

    def get(self, key: str, compute: Callable[[], dict]) -> dict:
        if key not in self.entries:
            self.entries[key] = compute()
            self._dirty = True
        return self.entries[key]

    def save(self) -> None:
        if self._dirty:
            write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
            self._dirty = False


def timm_stem_geometry(arch: str, model_kwargs: dict, in_chans: int) -> dict:
    """Build the model on the meta device (no memory, no weights) and read its stem."""
    import torch

    from .training import build_model, first_conv_name

    with torch.device("meta"):
        model = build_model(arch, num_classes=2, in_chans=in_chans, model_kwargs=model_kwargs)
    first_conv = first_conv_name(model)
    weight = model.get_submodule(first_conv).weight
    stride = model.get_submodule(first_conv).stride
    return {
        "first_conv": first_conv,
        "out_channels": int(weight.shape[0]),
        "in_chans": int(weight.shape[1]),
        "kernel_size": int(weight.shape[-1]),
        "stride": int(stride[0]),
    }


class ZooSource:
    source: ClassVar[str]
    remote: ClassVar[bool] = False  # its checkpoints are read over the network (see fetch)

    def __init__(self, name: str, options: dict, outdir: str, cache: GeometryCache):
        self.name = name
        self.options = options
        self.outdir = outdir
        self.cache = cache

    def checkpoints(self) -> list[CheckpointSpec]:
        raise NotImplementedError

    def runs(self) -> dict[str, dict]:
        """Training runs this source performs itself, by name; most sources have none."""
        return {}

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        """Read the stem (and its init, where known) of one checkpoint; raise StemError if unusable."""
        raise NotImplementedError

    @classmethod
    def fetch(cls, spec: CheckpointSpec) -> dict:
        """Put what load_stem reads over the network into its local cache, so it can run without one later."""
        return {"fetched": None, "why": "a local source"}


@register
class TrainedHere(ZooSource):
    """CNNs trained by the workflow (timm models or the paper's CIFAR nets), every (arch, seed, labels), init kept."""

    source = "train"

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.options["preprocessing"])

    @property
    def unit(self) -> str:
        """Checkpoints are kept at training steps, or at epochs where the config lists `epochs`."""
        return "epoch" if "epochs" in self.options else "step"

    def _runs(self) -> list[dict]:
        runs = []
        for arch in self.options["archs"]:
            width = {"width": arch["width"]} if "width" in arch else {}
            for seed in self.options["seeds"]:
                for labels in self.options["labels"]:
                    runs.append({
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
        return runs

    @staticmethod
    def run_name(run: dict) -> str:
        return run_name(run["arch"], run["model_kwargs"].get("width"), run["seed"], run["labels"])

    def run_dir(self, run: dict) -> str:
        return f"{self.outdir}/zoos/{self.name}/runs/{self.run_name(run)}"

    def runs(self) -> dict[str, dict]:
        runs = {}
        for run in self._runs():
            name = self.run_name(run)
            if name in runs:
                raise ValueError(f"zoos.{self.name}.archs: two entries train the same run {name}; give "
                                 f"{run['arch']} once per width (different model_kwargs need another zoo)")
            runs[name] = run
        return runs

    def checkpoints(self) -> list[CheckpointSpec]:
        prep = self.preprocessing
        specs = []
        for run in self.runs().values():
            key = json.dumps(["timm", run["arch"], run["model_kwargs"], prep.in_chans], sort_keys=True)
            geometry = self.cache.get(
                key, lambda: timm_stem_geometry(run["arch"], run["model_kwargs"], prep.in_chans))
            run_dir = self.run_dir(run)
            for step in run["steps"]:
                if step == 0:
                    continue
                specs.append(CheckpointSpec(
                    zoo=self.name,
                    name=f"{self.run_name(run)}-{self.unit}{step:06d}",
                    source=self.source,
                    arch=run["arch"],
                    uri=f"{run_dir}/{checkpoint_file(self.unit, step)}",
                    first_conv=geometry["first_conv"],
                    kernel_size=geometry["kernel_size"],
                    in_chans=geometry["in_chans"],
                    dataset=run["dataset"],
                    preprocessing=prep,
                    init_uri=f"{run_dir}/{checkpoint_file(self.unit, 0)}",
                    step=step,
                    seed=run["seed"],
                    labels=run["labels"],
                    run=self.run_name(run),
                    extra={"width": run["model_kwargs"].get("width"),
                           "hyperparameters": json.dumps(hyperparameters(run), sort_keys=True)},
                ))
        return specs

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        key = f"{spec.first_conv}.weight"
        weight = validate_conv_weight(read_tensor(spec.uri, key)[1], spec.uri)
        init = validate_conv_weight(read_tensor(spec.init_uri, key)[1], spec.init_uri)
        metadata = read_safetensors_metadata(spec.uri)
        # Losses and accuracies measured when the checkpoint was kept (none in checkpoints trained before them).
        evaluation = json.loads(metadata.get("evaluation", "{}"))
        return Stem(weight=weight, init=init, stride=int(metadata["stem_stride"]),
                    first_conv=spec.first_conv, meta=evaluation)


def extract_stem(spec: CheckpointSpec) -> Stem:
    """The stem of one checkpoint (in RGB channel order), or a skipped Stem saying why it cannot be analysed.

    Whatever one checkpoint's bytes do to the readers becomes its skipped
    reason; only a failed download (a rerun may succeed) and interrupts escape.
    """
    # Said before reading: if the file is rewritten under a memory map, the job dies of SIGBUS, and this line
    # (with faulthandler's trace, see rule_io.logged) is what names the file in its log.
    print(f"{spec.id}: reading {spec.uri}", flush=True)
    try:
        with applied(Limits.from_dict(spec.extra.get("limits"))):
            stem = ZOO_SOURCES[spec.source].load_stem(spec)
        return stem.in_rgb_order() if spec.channel_order == "bgr" else stem
    except StemError as error:
        reason = str(error)
    except DownloadError:
        raise
    except Exception as error:  # noqa: BLE001 - one checkpoint's bytes must never stop the study
        reason = unreadable_reason(spec.uri, error)
    return Stem.skipped(reason, spec.first_conv, meta={"uri": spec.uri})


def unreadable_reason(uri: str, error: Exception) -> str:
    """What to do about a failure no reader anticipated; the exception's text is left out, as it may quote the file."""
    if isinstance(error, PermissionError):
        return f"{uri} (or its init): permission denied; make it readable (chmod a+r) or remove it from the zoo"
    if isinstance(error, OSError):
        return f"{uri} (or its init): cannot be read ({error.strerror or type(error).__name__}); check the file"
    if isinstance(error, RecursionError):
        return f"{uri}: nested too deeply to parse (a corrupt or hostile file); fetch or export it again"
    if isinstance(error, MemoryError):
        return f"{uri}: claims sizes too large to read into memory (corrupt?); fetch or export it again"
    return (f"{uri}: unreadable ({type(error).__name__} while reading it), not a checkpoint this workflow can "
            "analyse; fetch or export it again")


def fetch_checkpoint(spec: CheckpointSpec) -> dict:
    """Download what a remote checkpoint is read from into its cache; a checkpoint that cannot be read says why."""
    try:
        return ZOO_SOURCES[spec.source].fetch(spec)
    except StemError as error:
        return {"fetched": None, "why": str(error)}


# Sources in their own modules register themselves on import.
from . import archive_zoo, local_zoos, timm_zoo, torch_zoos  # noqa: E402,F401
