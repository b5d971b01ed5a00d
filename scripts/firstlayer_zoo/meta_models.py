"""Models built on the meta device (no memory, no weights), to read their stem's geometry when a study is planned.

torch and timm are imported only when a model is built: planning imports this module without them.
"""

from __future__ import annotations

import json
from typing import Callable


def on_meta_device(build: Callable[[], object]):
    """The model `build` returns, its parameters on the meta device: shapes without storage."""
    import torch

    with torch.device("meta"):
        return build()


def conv_geometry(conv) -> dict:
    """Filters, input channels, kernel size and stride of a conv module (the kernel's width for a non-square one)."""
    weight = conv.weight
    return {
        "out_channels": int(weight.shape[0]),
        "in_chans": int(weight.shape[1]),
        "kernel_size": int(weight.shape[-1]),
        "stride": int(conv.stride[0]),
    }


def model_stem_geometry(arch: str, model_kwargs: dict, in_chans: int) -> dict:
    """first_conv and conv_geometry of the stem of a model training.build_model makes (timm's, or a CIFAR net)."""
    from .training import build_model, first_conv_name

    model = on_meta_device(lambda: build_model(arch, num_classes=2, in_chans=in_chans, model_kwargs=model_kwargs))
    first_conv = first_conv_name(model)
    return {"first_conv": first_conv, **conv_geometry(model.get_submodule(first_conv))}


def cached_stem_geometry(cache, arch: str, model_kwargs: dict, in_chans: int) -> dict:
    """model_stem_geometry, kept in the study's zoo_sources.base.GeometryCache: building a model costs seconds."""
    key = json.dumps(["timm", arch, model_kwargs, in_chans], sort_keys=True)
    return cache.get(key, lambda: model_stem_geometry(arch, model_kwargs, in_chans))
