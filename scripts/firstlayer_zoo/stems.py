"""The stem record (Stem) and the rules every reader applies to one, whatever the format.

Stem is a checkpoint's first-conv filter bank as read (with its init, stride and
skip reason); validate_conv_weight is what a weight must be to be profiled;
declared_first_conv and torch_stem say which layer of a model is its stem, and
torch_conv_stem reads a torch conv module into a Stem. It imports no torch: the
analysis env, which has none, imports it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


class StemError(ValueError):
    """A checkpoint whose stem cannot be analysed; the message says why."""


@dataclass
class Stem:
    weight: np.ndarray  # (K, c, k, k) float64
    init: np.ndarray | None
    stride: int | None
    first_conv: str
    status: str = "ok"
    meta: dict = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_chans(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kernel_size(self) -> int:
        return int(self.weight.shape[2])

    def in_rgb_order(self, where: str) -> "Stem":
        """The stem of a model fed BGR images as the equal stem for RGB images: input channels reversed.

        conv(W, bgr) = conv(W[:, ::-1], rgb), so the reversed stem is profiled in the dataset's own
        (RGB) patch basis, shared with RGB models; the initialisation is reversed with it.
        """
        if self.status != "ok":
            return self
        if self.in_chans != 3:
            raise StemError(f"{where}: channel_order bgr needs a stem over 3 colour "
                            f"channels, this one takes {self.in_chans}; set channel_order: rgb for this zoo")
        init = None if self.init is None else np.ascontiguousarray(self.init[:, ::-1])
        return replace(self, weight=np.ascontiguousarray(self.weight[:, ::-1]), init=init)

    def filters(self, subtract_init: bool) -> np.ndarray:
        """(K, p) rows in conv-weight order, minus the initialisation when asked and known."""
        weight = self.weight - self.init if subtract_init and self.init is not None else self.weight
        return weight.reshape(weight.shape[0], -1)

    @classmethod
    def skipped(cls, reason: str, first_conv: str) -> "Stem":
        return cls(weight=np.zeros((0, 0, 0, 0)), init=None, stride=None,
                   first_conv=first_conv, status=f"skipped: {reason}")


def validate_conv_weight(weight: np.ndarray, source: str) -> np.ndarray:
    """A stem weight must be a finite (K, c, k, k) square kernel with k > 1; return it as float64."""
    if weight.ndim != 4:
        raise StemError(f"{source}: stem weight has shape {tuple(weight.shape)}, not (out, in, k, k)")
    if 0 in weight.shape:
        raise StemError(f"{source}: stem weight has shape {tuple(weight.shape)}: no filters to profile")
    if weight.shape[2] != weight.shape[3]:
        raise StemError(f"{source}: non-square {weight.shape[2]}x{weight.shape[3]} kernel has no square patch basis")
    if weight.shape[2] == 1:
        raise StemError(f"{source}: 1x1 stem only mixes colours; it has no spatial patch basis to be profiled in")
    weight = np.asarray(weight, dtype=np.float64)
    if not np.all(np.isfinite(weight)):
        raise StemError(f"{source}: stem weight contains NaN or Inf")
    return weight


def declared_first_conv(pretrained_cfg: dict) -> str | None:
    """The stem timm's pretrained_cfg names; some models list two (a rep-param pair): the first is the stem."""
    name = pretrained_cfg.get("first_conv")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return name or None


def torch_stem(model, declared_only: bool = False) -> tuple[str, object]:
    """(name, module) of a torch model's stem: the conv its pretrained_cfg names, else its first Conv2d.

    timm's models and the paper's CIFAR nets declare theirs; every classic torchvision and hub CNN has its
    stem as the first Conv2d in registration order. declared_only: refuse a model that declares none
    (ValueError) rather than search it.
    """
    name = declared_first_conv(getattr(model, "pretrained_cfg", None) or {})
    if name is None:
        if declared_only:
            raise ValueError(f"{type(model).__name__} declares no first_conv in its pretrained_cfg")
        name = next((name for name, module in model.named_modules() if _is_conv2d(module)), None)
        if name is None:
            raise StemError(f"{type(model).__name__} has no Conv2d")
    return name, model.get_submodule(name)


def _is_conv2d(module) -> bool:
    """isinstance(module, torch.nn.Conv2d), asked without importing torch.

    This module is imported where torch is not installed (the analysis env); whoever holds a torch model has it.
    """
    return any((cls.__module__, cls.__qualname__) == ("torch.nn.modules.conv", "Conv2d")
               for cls in type(module).__mro__)


def torch_conv_stem(conv, first_conv: str, where: str, meta: dict | None = None) -> Stem:
    """A torch conv module's filter bank as a Stem; a grouped conv is refused, as every format's reader does."""
    if getattr(conv, "groups", 1) != 1:
        raise StemError(f"{where}: grouped stem (groups={conv.groups}): each filter sees a part of the input "
                        "channels; no c*k*k patch basis fits")
    strides = set(getattr(conv, "stride", ()))
    return Stem(weight=validate_conv_weight(conv.weight.detach().cpu().double().numpy(), where), init=None,
                stride=strides.pop() if len(strides) == 1 else None, first_conv=first_conv, meta=meta or {})
