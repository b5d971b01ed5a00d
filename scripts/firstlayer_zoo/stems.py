"""The stem: the first conv layer's filter bank, read without executing checkpoint code."""

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

    def in_rgb_order(self) -> "Stem":
        """The stem of a model fed BGR images as the equal stem for RGB images: input channels reversed.

        conv(W, bgr) = conv(W[:, ::-1], rgb), so the reversed stem is profiled in the dataset's own
        (RGB) patch basis, shared with RGB models; the initialisation is reversed with it.
        """
        if self.status != "ok":
            return self
        if self.in_chans != 3:
            raise StemError(f"{self.meta.get('uri', self.first_conv)}: channel_order bgr needs a stem over 3 colour "
                            f"channels, this one takes {self.in_chans}; set channel_order: rgb for this zoo")
        init = None if self.init is None else np.ascontiguousarray(self.init[:, ::-1])
        return replace(self, weight=np.ascontiguousarray(self.weight[:, ::-1]), init=init)

    def filters(self, subtract_init: bool) -> np.ndarray:
        """(K, p) rows in conv-weight order, minus the initialisation when asked and known."""
        weight = self.weight - self.init if subtract_init and self.init is not None else self.weight
        return weight.reshape(weight.shape[0], -1)

    @classmethod
    def skipped(cls, reason: str, first_conv: str, meta: dict) -> "Stem":
        return cls(weight=np.zeros((0, 0, 0, 0)), init=None, stride=None,
                   first_conv=first_conv, status=f"skipped: {reason}", meta=meta)


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

