"""Rows of the timm stem table, from each tag's pretrained_cfg and its model built on the meta device.

scripts/dev/build_timm_stem_table.py writes the committed table with these; planning builds a
row only for a tag the table lacks (a newer timm).
"""

from __future__ import annotations

import json
import math
import re

from .meta_models import on_meta_device
from .stems import declared_first_conv
from .timm_table import TIMM_TABLE_COLUMNS
from .weight_standardisation import SCALED, WEIGHT_STANDARDISED

DATASET_TOKEN = re.compile(
    r"^(in\d+k|in21k|laion\d*[bmk]?|openai|dfn\d+b|webli|ig\d+b|sw\d+k|jft\d*[mb]?|merged\d*m?|cc\d+m|"
    r"mim|datacomp\w*|metaclip\w*|yfcc\w*|lvd\d+m|inat\d+|places\d+)$"
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
    first_conv = declared_first_conv(cfg)
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
        # The flattened patch is (c, kh, kw) unless the embedding says channels come last (NaFlex ViTs).
        parent = model.get_submodule(first_conv.rpartition(".")[0]) if "." in first_conv else model
        layout = "hwc" if getattr(parent, "channels_last", False) is True else "chw"
        row.update(kernel_size=kernel, in_chans=image_chans, out_channels=out_channels, stride=kernel,
                   patch_layout=layout)
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


def build_row(tag: str) -> dict:
    """A table row for a tag the committed table lacks: the model is built on the meta device."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(tag)
    except RuntimeError:  # the architecture exists, the tag does not
        cfg = None
    if cfg is None:
        return {"tag": tag, "status": f"skipped: {tag!r} is not a timm pretrained tag"}
    try:
        model = on_meta_device(lambda: timm.create_model(tag.split(".")[0], pretrained=False))
        error = None
    except Exception as failure:  # noqa: BLE001 - reported in the row's status
        model, error = None, f"{type(failure).__name__}: {failure}"[:200]
    row = stem_row(tag, cfg.to_dict(), model, error)
    row.update(dataset_tag=dataset_tag(tag), default_tag=False)
    return {column: ("" if row.get(column) is None else str(row[column])) for column in TIMM_TABLE_COLUMNS}
