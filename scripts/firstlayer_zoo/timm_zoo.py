"""timm's pretrained zoo as data: one table row per tag (stem geometry and eval preprocessing).

The table (workflow/resources/timm_stems.csv) is built once by
scripts/dev/build_timm_stem_table.py so that planning a study over the whole
zoo reads a CSV instead of building models.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

from .preprocessing import INTERPOLATIONS, Preprocessing

TIMM_TABLE = Path(__file__).resolve().parents[2] / "workflow" / "resources" / "timm_stems.csv"
TIMM_TABLE_COLUMNS = [
    "tag", "arch", "first_conv", "module_type", "kernel_size", "in_chans", "out_channels", "stride",
    "std_eps", "std_scale", "input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std",
    "hf_hub_id", "hf_hub_filename", "dataset_tag", "status",
]
WEIGHT_STANDARDISED = ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")
SCALED = ("ScaledStdConv2d", "ScaledStdConv2dSame")
DATASET_TOKEN = re.compile(
    r"^(in\d+k|in21k|laion\d*[bmk]?|openai|dfn\d+b|webli|ig\d+b|sw\d+k|jft\d*[mb]?|merged\d*m?|cc\d+m|"
    r"mim|datacomp\w*|metaclip\w*|yfcc\w*|lvd\d+m|inat\d+|places\d+|tv|tv2)$"
)


def dataset_tag(tag: str) -> str | None:
    """The training-data tokens of a tag, pretraining first: 'fb_in22k_ft_in1k' -> 'in22k>in1k'."""
    if "." not in tag:
        return None
    tokens = [token for token in tag.split(".", 1)[1].split("_") if DATASET_TOKEN.match(token)]
    tokens = [token for index, token in enumerate(tokens) if token not in tokens[:index]]
    return ">".join(tokens) or None


def stem_row(tag: str, cfg: dict, model, build_error: str | None) -> dict:
    """One table row: the stem module of `model` named by the tag's pretrained_cfg, and its eval transform."""
    first_conv = cfg.get("first_conv")
    if isinstance(first_conv, (list, tuple)):
        first_conv = first_conv[0] if first_conv else None
    input_size = list(cfg.get("input_size") or (3, 224, 224))
    row = {
        "tag": tag,
        "arch": tag.split(".")[0],
        "first_conv": first_conv,
        "input_size": json.dumps(input_size),
        "crop_pct": cfg.get("crop_pct", 0.875),
        "crop_mode": cfg.get("crop_mode", "center"),
        "interpolation": cfg.get("interpolation", "bilinear"),
        "mean": json.dumps([float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))]),
        "std": json.dumps([float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))]),
        "hf_hub_id": cfg.get("hf_hub_id"),
        "hf_hub_filename": cfg.get("hf_hub_filename"),
        "status": "ok",
    }
    if build_error:
        return {**row, "status": f"skipped: the model does not build on the meta device ({build_error})"}
    if not first_conv:
        return {**row, "status": "skipped: pretrained_cfg names no first_conv"}
    try:
        module = model.get_submodule(first_conv)
    except AttributeError:
        return {**row, "status": f"skipped: first_conv {first_conv!r} is not a module of the model"}
    module_type = type(module).__name__
    weight_shape = tuple(getattr(module, "weight").shape) if hasattr(module, "weight") else ()
    row["module_type"] = module_type
    image_chans = int(input_size[0])
    if len(weight_shape) == 2:
        out_channels, in_features = weight_shape
        kernel = math.isqrt(in_features // image_chans)
        if kernel * kernel * image_chans != in_features:
            return {**row, "status": f"skipped: Linear stem over {in_features} features is no c x k x k patch"}
        row.update(kernel_size=kernel, in_chans=image_chans, out_channels=out_channels, stride=kernel)
        return row
    if len(weight_shape) != 4:
        return {**row, "status": f"skipped: {module_type} stem has weight shape {weight_shape}"}
    out_channels, in_chans, kernel_h, kernel_w = weight_shape
    row.update(kernel_size=kernel_w, in_chans=in_chans, out_channels=out_channels,
               stride=int(module.stride[0]))
    if module_type in WEIGHT_STANDARDISED:
        row["std_eps"] = float(module.eps)
        if module_type in SCALED:
            row["std_scale"] = float(module.scale)
    if getattr(module, "groups", 1) != 1:
        row["status"] = f"skipped: grouped stem (groups={module.groups})"
    elif kernel_h != kernel_w:
        row["status"] = f"skipped: non-square {kernel_h}x{kernel_w} kernel has no square patch basis"
    elif in_chans != image_chans:
        row["status"] = (f"skipped: the stem takes {in_chans} channels but images have {image_chans} "
                         "(a space-to-depth step comes first); no image patch basis fits")
    return row


def eval_preprocessing(row: dict) -> Preprocessing:
    """timm's eval transform: shorter side to floor(size / crop_pct), centre crop to size, normalise."""
    size = int(json.loads(row["input_size"])[-1])
    crop_pct = float(row["crop_pct"]) if row.get("crop_pct") not in (None, "") else 0.875
    interpolation = row.get("interpolation") or "bilinear"
    return Preprocessing(
        resize=math.floor(size / crop_pct),
        crop=size,
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
        mean=tuple(json.loads(row["mean"])),
        std=tuple(json.loads(row["std"])),
    )


@lru_cache(maxsize=2)
def load_timm_table(path: str | Path = TIMM_TABLE) -> dict[str, dict]:
    """The committed table by tag; values as the CSV module reads them (empty string = unknown)."""
    import csv

    with open(path, newline="") as handle:
        return {row["tag"]: row for row in csv.DictReader(handle)}
