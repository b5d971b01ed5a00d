"""The preprocessing a checkpoint was trained with, as a record with a stable key, and its geometric part.

`apply` resizes and centre-crops a uint8 image as timm's eval transform does (PIL, imported there only:
planning reads these records without it); the normalisation is applied to the patch statistics analytically.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's eval crop fraction when a pretrained_cfg names none.
TIMM_DEFAULT_CROP_PCT = 0.875
# PIL's resampling filters, by their names in lower case (PIL is imported only where images are resized).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise per channel.

    The geometric part (resize, crop) runs on uint8 images and gives the same
    pixels as timm's eval transform (torchvision's Resize of the shorter side
    on a PIL image, then CenterCrop); the affine part is applied to the patch
    statistics analytically.
    """

    resize: int | None = None
    crop: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize_mode: str = "shorter"  # or "squash": both sides to `resize`, aspect ratio not kept (timm crop_mode)

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not one of {sorted(INTERPOLATIONS)}"
            )
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.resize_mode not in ("shorter", "squash"):
            raise ValueError(f"resize_mode {self.resize_mode!r} is not one of ['shorter', 'squash']")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} name different channel counts")

    @property
    def in_chans(self) -> int:
        return len(self.mean)

    def smallest_side(self, native: int | None) -> int | None:
        """The shorter side of the smallest image it gives, given images of shorter side `native` (None: unknown)."""
        return self.crop or self.resize or native

    def to_dict(self) -> dict:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})

    @cached_property
    def key(self) -> str:
        """Short stable name used in paths: bases are shared by equal preprocessing."""
        values = self.to_dict()
        if values["resize_mode"] == "shorter":
            del values["resize_mode"]  # keeps the keys of studies made before squash existed
        text = json.dumps(values, sort_keys=True)
        size = f"r{self.resize or 0}c{self.crop or 0}"
        return f"{size}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"

    @cached_property
    def pixels(self) -> "Preprocessing":
        """Its pixel pipeline alone (resize, crop, interpolation, channels), normalised as v/255: what its patch
        statistics are measured under. Preprocessings that differ only in mean and std share it."""
        return replace(self, mean=(0.0,) * self.in_chans, std=(1.0,) * self.in_chans)

    @classmethod
    def from_timm_cfg(cls, pretrained_cfg) -> "Preprocessing":
        """timm's eval preprocessing: resize to floor(input_size / crop_pct), centre-crop input_size.

        Takes a pretrained_cfg (dict or timm's PretrainedCfg) or the dict
        `timm.data.resolve_data_config` returns. crop_mode squash resizes both
        sides; crop_mode border is taken as a centre crop, and a non-square
        input_size by its width (timm has a handful of each).
        """
        cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else pretrained_cfg.to_dict()
        channels, _, size = cfg.get("input_size") or (3, 224, 224)
        crop_pct = cfg.get("crop_pct") or TIMM_DEFAULT_CROP_PCT
        mean, std = tuple(cfg.get("mean") or IMAGENET_MEAN), tuple(cfg.get("std") or IMAGENET_STD)
        if len(mean) != channels and len(mean) == 1:
            mean, std = mean * channels, std * channels
        interpolation = cfg.get("interpolation") or "bilinear"
        return cls(resize=math.floor(size / crop_pct), crop=size,
                   interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
                   mean=mean, std=std,
                   resize_mode="squash" if cfg.get("crop_mode") == "squash" else "shorter")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H, W, C) or (H, W) -> uint8 (in_chans, H', W') after resize and centre crop."""
        channels = image.shape[2] if image.ndim == 3 else 1
        if self.resize or channels != self.in_chans:
            image = self._resized(image)
        if image.ndim == 2:
            image = image[:, :, None]
        if self.crop:
            height, width = image.shape[:2]
            if min(width, height) < self.crop:
                if not self.resize:
                    raise ValueError(f"image of {width}x{height} is smaller than the {self.crop} crop")
                # A crop larger than the resize (timm's crop_pct > 1): torchvision's CenterCrop pads the short
                # side(s) with zeros, the extra pixel of an odd margin after the image, then crops as usual.
                pad_h, pad_w = max(self.crop - height, 0), max(self.crop - width, 0)
                image = np.pad(image, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
                height, width = image.shape[:2]
            # torchvision's CenterCrop offsets, rounding half to even as it does.
            top, left = int(round((height - self.crop) / 2.0)), int(round((width - self.crop) / 2.0))
            image = image[top:top + self.crop, left:left + self.crop]
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def _resized(self, image: np.ndarray) -> np.ndarray:
        """Channel conversion and torchvision's Resize(int) of the shorter side, with PIL."""
        from PIL import Image

        pil = Image.fromarray(image).convert("L" if self.in_chans == 1 else "RGB")
        if self.resize:
            width, height = pil.size
            short, long = min(width, height), max(width, height)
            new_short, new_long = self.resize, int(self.resize * long / short)
            size = (new_short, new_long) if width <= height else (new_long, new_short)
            if self.resize_mode == "squash":
                size = (self.resize, self.resize)
            pil = pil.resize(size, Image.Resampling[self.interpolation.upper()])
        return np.asarray(pil)
