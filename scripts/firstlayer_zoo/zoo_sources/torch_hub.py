"""Zoo sources served by PyTorch's own machinery: torchvision weight enums and torch.hub entry points."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..downloads import FETCH_FIRST, DownloadError, endpoint_of, unreachable_as
from ..meta_models import conv_geometry, on_meta_device
from ..preprocessing import Preprocessing
from ..records import CheckpointSpec
from ..stems import Stem, StemError, torch_conv_stem, torch_stem, validate_conv_weight
from .base import ZooSource, register

TORCHVISION_DOWNLOADS = "https://download.pytorch.org/models/"


def torchvision_entry(weights_name: str) -> dict:
    """What planning needs about a weight enum: stem geometry (model built on the meta device), URL, transform."""
    from torchvision import models

    try:
        weights = models.get_weight(weights_name)
    except (ValueError, KeyError, AttributeError):
        raise ValueError(f"{weights_name!r} is not a torchvision weight enum (e.g. ResNet50_Weights.IMAGENET1K_V2)") \
            from None
    arch = next(name for name in models.list_models()
                if models.get_model_weights(name) is type(weights))
    model = on_meta_device(lambda: models.get_model(arch, weights=None))
    first_conv, conv = torch_stem(model)
    transform = weights.transforms()
    return {
        "arch": arch,
        "url": weights.url,
        "first_conv": first_conv,
        **conv_geometry(conv),
        "preprocessing": {
            "resize": int(transform.resize_size[0]),
            "crop": int(transform.crop_size[0]),
            "interpolation": transform.interpolation.value,
            "mean": list(transform.mean),
            "std": list(transform.std),
        },
    }


def _stem_from_state(state: dict, first_conv: str, where: str) -> np.ndarray:
    key = f"{first_conv}.weight"
    if key not in state:
        raise StemError(f"{where}: no tensor named {key!r}")
    return validate_conv_weight(state[key].float().numpy(), where)


@register
class TorchvisionWeightsSource(ZooSource):
    """torchvision weight enums, downloaded by torch.hub with torchvision's hash check."""

    source = "torchvision"
    remote = True
    spec_fields = {"dataset_tag": str}
    stem_fields = {"file_size": int, "bytes_fetched": int}

    def checkpoints(self) -> list[CheckpointSpec]:
        mirror = self.options.get("mirror")
        specs = []
        for weights_name in self.options["weights"]:
            entry = self.cache.get(json.dumps(["torchvision", weights_name]),
                                   lambda: torchvision_entry(weights_name))
            url = entry["url"]
            if mirror:
                url = mirror.rstrip("/") + "/" + url.removeprefix(TORCHVISION_DOWNLOADS)
            specs.append(CheckpointSpec(
                zoo=self.name,
                name=weights_name,
                source=self.source,
                arch=entry["arch"],
                locator=url,
                first_conv=entry["first_conv"],
                kernel_size=entry["kernel_size"],
                in_chans=entry["in_chans"],
                dataset=self.options["dataset"],
                preprocessing=Preprocessing.from_dict(entry["preprocessing"]),
                stride=entry["stride"],
                extra={"dataset_tag": weights_name.split(".")[-1].split("_")[0].lower()},
            ))
        return specs

    @classmethod
    def _state(cls, spec: CheckpointSpec) -> dict:
        """The weights, from $TORCH_HOME/hub/checkpoints once downloaded there (no network needed then)."""
        import torch

        ways_out = (f"set the zoo's `mirror` to a copy this machine reaches, or download the weights into "
                    f"{torch.hub.get_dir()}/checkpoints where there is network (same TORCH_HOME): "
                    + FETCH_FIRST.removeprefix("or "))
        with unreachable_as(endpoint_of(spec.locator), ways_out):
            try:
                return torch.hub.load_state_dict_from_url(spec.locator, map_location="cpu", progress=False,
                                                          check_hash=True, weights_only=True)
            except RuntimeError as error:
                if "invalid hash value" in str(error):
                    raise DownloadError(f"{spec.uri}: the download fails torchvision's hash check ({error}); "
                                        "nothing was kept, rerun to download it again") from None
                raise

    @classmethod
    def fetch(cls, spec: CheckpointSpec) -> dict:
        cls._state(spec)
        path = cls._cached(spec)
        return {"fetched": str(path), "bytes": path.stat().st_size}

    @staticmethod
    def _cached(spec: CheckpointSpec) -> Path:
        """Where torch.hub keeps the weights file once downloaded."""
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.locator)

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        cached = cls._cached(spec)
        fetched_before = cached.exists()
        state = cls._state(spec)
        size = cached.stat().st_size
        return Stem(weight=_stem_from_state(state, spec.first_conv, spec.uri), init=None,
                    stride=spec.stride, first_conv=spec.first_conv,
                    meta={"file_size": size, "bytes_fetched": 0 if fetched_before else size})


@register
class TorchHubSource(ZooSource):
    """torch.hub `repo:entry` pairs; the hub code runs only in the extract job, where trust_repo allows it.

    Planning never runs hub code: the stem's kernel size and channels come from
    the config (3 and 3 by default, the CIFAR models' stems).
    """

    source = "torchhub"
    remote = True
    spec_fields = {"hub_source": str, "trust_repo": bool, "kwargs": dict, "dataset_tag": str}

    def checkpoints(self) -> list[CheckpointSpec]:
        specs = []
        prep = Preprocessing.from_dict(self.options["preprocessing"])
        for entry in self.options["entries"]:
            entry = {"entry": entry} if isinstance(entry, str) else entry
            repo, _, function = entry["entry"].rpartition(":")
            if not repo or not function:
                raise ValueError(f"zoos.{self.name}.entries: {entry['entry']!r} is not 'owner/repo[:ref]:entry'")
            specs.append(CheckpointSpec(
                zoo=self.name,
                name=entry.get("name", function),
                source=self.source,
                arch=function,
                locator=entry["entry"],
                label=f"torchhub://{entry['entry']}",
                first_conv=entry.get("first_conv", ""),
                kernel_size=entry.get("kernel_size", 3),
                in_chans=entry.get("in_chans", prep.in_chans),
                dataset=self.options["dataset"],
                preprocessing=prep,
                extra={"hub_source": self.options.get("hub_source", "github"),
                       "trust_repo": self.options["trust_repo"], "kwargs": entry.get("kwargs", {}),
                       "dataset_tag": entry.get("dataset_tag")},
                channel_order=self.options.get("channel_order", "rgb"),
            ))
        return specs

    @classmethod
    def _model(cls, spec: CheckpointSpec):
        """The entry point's model; torch.hub keeps the repository (and the weights it loads) in its cache."""
        import torch

        extra = spec.extra
        repo, _, function = spec.locator.rpartition(":")
        ways_out = (f"copy the hub repository to this machine and set hub_source: local, or fill "
                    f"{torch.hub.get_dir()} where there is network (same TORCH_HOME): " + FETCH_FIRST.removeprefix("or "))
        with unreachable_as("https://github.com", ways_out):
            return torch.hub.load(repo, function, source=extra["hub_source"],
                                  trust_repo=extra["trust_repo"], verbose=False, **extra["kwargs"])

    @classmethod
    def fetch(cls, spec: CheckpointSpec) -> dict:
        import torch

        cls._model(spec)
        return {"fetched": torch.hub.get_dir()}

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        model = cls._model(spec)
        first_conv, conv = ((spec.first_conv, model.get_submodule(spec.first_conv)) if spec.first_conv
                            else torch_stem(model))
        stem = torch_conv_stem(conv, first_conv, spec.uri)
        if (stem.in_chans, stem.kernel_size) != (spec.in_chans, spec.kernel_size):
            raise StemError(f"{spec.uri}: stem {first_conv} is {stem.in_chans} channels x {stem.kernel_size}x"
                            f"{stem.kernel_size}, the config plans {spec.in_chans} x {spec.kernel_size}x"
                            f"{spec.kernel_size}; set kernel_size/in_chans of this entry")
        return stem
