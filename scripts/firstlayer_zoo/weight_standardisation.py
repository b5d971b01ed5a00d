"""The filters a stem applies, from its stored tensors: weight-standardised convs and linear patch embeddings."""

from __future__ import annotations

import numpy as np

from .checkpoint_io import as_conv_weight
from .stems import StemError

WEIGHT_STANDARDISED = ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")
SCALED = ("ScaledStdConv2d", "ScaledStdConv2dSame")


def effective_filters(weights: dict[str, np.ndarray], spec_extra: dict, first_conv: str) -> np.ndarray:
    """The filter bank the model applies, as (out, c, k, k), from the stored tensors.

    Weight-standardised convs apply (w - mean) / sqrt(var + eps) per filter
    (times gain * scale for the scaled variant), not w; Linear patch
    embeddings hold a matrix over the patch flattened in the model's layout.
    """
    weight = weights[f"{first_conv}.weight"]
    module_type = spec_extra.get("module_type")
    kernel, chans = spec_extra["kernel_size"], spec_extra["in_chans"]
    if weight.ndim == 2:
        if weight.shape[1] != chans * kernel * kernel:
            raise StemError(f"{first_conv}.weight: Linear stem of shape {weight.shape} is no {chans}x{kernel}x{kernel} "
                            "patch embedding")
        weight = as_conv_weight(weight, kernel, spec_extra.get("patch_layout") or "chw", f"{first_conv}.weight")
    if module_type in WEIGHT_STANDARDISED:
        flat = weight.reshape(weight.shape[0], -1)
        mean = flat.mean(axis=1, keepdims=True)
        var = flat.var(axis=1, keepdims=True)
        flat = (flat - mean) / np.sqrt(var + float(spec_extra["std_eps"]))
        if module_type in SCALED:
            gain = weights[f"{first_conv}.gain"].reshape(-1, 1)
            flat = flat * gain * float(spec_extra["std_scale"])
        weight = flat.reshape(weight.shape)
    return weight
