"""The preprocessing a checkpoint was trained with, as a record with a stable key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise per channel.

    The geometric part (resize, crop) runs on uint8 images as PIL does in
    torchvision's and timm's eval transforms; the affine part is applied to
    the patch statistics analytically.
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})

    @property
    def key(self) -> str:
        """Short stable name used in paths: bases are shared by equal preprocessing."""
        values = self.to_dict()
        if values["resize_mode"] == "shorter":
            del values["resize_mode"]  # keeps the keys of studies made before squash existed
        text = json.dumps(values, sort_keys=True)
        size = f"r{self.resize or 0}c{self.crop or 0}"
        return f"{size}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"

    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H, W, C) or (H, W) -> uint8 (in_chans, H', W') after resize and centre crop."""
        pil = Image.fromarray(image).convert("L" if self.in_chans == 1 else "RGB")
        if self.resize:
            width, height = pil.size
            scale = self.resize / min(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            if self.resize_mode == "squash":
                size = (self.resize, self.resize)
            pil = pil.resize(size, INTERPOLATIONS[self.interpolation])
        if self.crop:
            width, height = pil.size
            if min(width, height) < self.crop:
                raise ValueError(f"image of {width}x{height} is smaller than the {self.crop} crop")
            left, top = (width - self.crop) // 2, (height - self.crop) // 2
            pil = pil.crop((left, top, left + self.crop, top + self.crop))
        array = np.asarray(pil)
        if array.ndim == 2:
            array = array[:, :, None]
        return np.ascontiguousarray(array.transpose(2, 0, 1))
