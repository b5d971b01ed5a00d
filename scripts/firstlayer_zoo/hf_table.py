"""Hub repositories in the transformers, OpenCLIP and timm formats as data: which tensor is the stem, and how to
read the eval preprocessing.

Two committed tables say it (workflow/resources, each row with the source file it was read from, checked
against transformers and open_clip_torch by scripts/dev/build_hf_fixtures.py):

- hf_stems.csv, one row per layout: a transformers `model_type`, `open_clip:vit|resnet|timm` or `timm`. It names
  the stem tensor (the end of its name after the model's own prefix, `resnet.`, `vision_model.`, ..., or the
  whole name), its kind (Conv2d, Linear patch embedding with its flattening order, weight-standardised conv, or
  whatever the timm table says of a timm architecture), its stride and the file the eval preprocessing is in.
- hf_image_processors.csv, one row per transformers image processor: its resize rule and the defaults of every
  value a preprocessor_config.json may leave out.

Geometry (kernel, channels, filters) comes from the stem tensor's shape in the safetensors header; the tables
supply only what a shape cannot say. Nothing here touches the network.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .checkpoint_io import FLOAT_SAFETENSORS_DTYPES
from .paths import HF_PROCESSOR_TABLE, HF_STEM_TABLE, TIMM_STEM_TABLE
from .preprocessing import INTERPOLATIONS, Preprocessing
from .stems import StemError
from .timm_table import load_timm_table, table_number

# The files a repository's layout is read from.
CONFIG = "config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"
# PIL's resampling filters by the numbers transformers stores (PILImageResampling).
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# OpenCLIP's defaults (open_clip/constants.py OPENAI_DATASET_MEAN, OPENAI_DATASET_STD).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LayoutError(StemError):
    """A repository whose stem or preprocessing the tables cannot give; the message says what to set."""


@dataclass(frozen=True)
class StemRule:
    """One row of hf_stems.csv."""

    layout: str
    stem: str  # the tensor's name, or its end after the model's prefix (match "suffix"); {first_conv}: timm's
    match: str  # "suffix" or "exact"
    module_type: str  # Conv2d, Linear, StdConv2d, or "timm" (the timm table's type for the architecture)
    patch_layout: str | None  # chw or hwc, for a Linear patch embedding
    stride: str  # an integer, "patch" (the kernel), "config:<dotted key>,<default>", or "timm"
    patch_size: str | None  # "<dotted key>,<default>" in config.json, for a Linear patch embedding
    std_eps: float | None
    preprocessing: str  # the file the eval preprocessing is read from
    source: str


@dataclass(frozen=True)
class StemPlan:
    """Where a repository's stem is and what it is, from the tables, its config and its safetensors header."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    module_type: str
    kernel_size: int
    in_chans: int
    out_channels: int
    stride: int | None
    patch_layout: str | None = None
    std_eps: float | None = None
    std_scale: float | None = None
    extra_keys: tuple[str, ...] = ()  # read beside the weight (a scaled weight standardisation's gain)

    def to_dict(self) -> dict:
        return {"key": self.key, "shape": list(self.shape), "dtype": self.dtype, "module_type": self.module_type,
                "kernel_size": self.kernel_size, "in_chans": self.in_chans, "out_channels": self.out_channels,
                "stride": self.stride, "patch_layout": self.patch_layout, "std_eps": self.std_eps,
                "std_scale": self.std_scale, "extra_keys": list(self.extra_keys)}

    @classmethod
    def from_dict(cls, values: dict) -> "StemPlan":
        return cls(**{**values, "shape": tuple(values["shape"]), "extra_keys": tuple(values["extra_keys"])})


@lru_cache(maxsize=2)
def load_stem_table(path: str | Path = HF_STEM_TABLE) -> dict[str, StemRule]:
    with open(path, newline="") as handle:
        return {row["layout"]: StemRule(
            layout=row["layout"], stem=row["stem"], match=row["match"], module_type=row["module_type"],
            patch_layout=row["patch_layout"] or None, stride=row["stride"], patch_size=row["patch_size"] or None,
            std_eps=table_number(row["std_eps"]), preprocessing=row["preprocessing"], source=row["source"])
            for row in csv.DictReader(handle)}


@lru_cache(maxsize=2)
def load_processor_table(path: str | Path = HF_PROCESSOR_TABLE) -> dict[str, dict]:
    with open(path, newline="") as handle:
        rows = {}
        for row in csv.DictReader(handle):
            rows[row["processor"]] = {key: (json.loads(value) if value else None) if key not in (
                "processor", "resize_rule", "source") else value for key, value in row.items()}
        return rows


# Which layout a repository has ----------------------------------------------------------------------------

def repository_layout(config: dict | None, open_clip_config: dict | None) -> str:
    """The table's layout for a repository's config files: model_type, open_clip:<tower>, timm, or why none.

    Raises LayoutError naming what the repository lacks when it is none of them.
    """
    if open_clip_config is not None:
        vision = (open_clip_config.get("model_cfg") or {}).get("vision_cfg") or {}
        if vision.get("timm_model_name"):
            return "open_clip:timm"
        if isinstance(vision.get("layers"), (list, tuple)):
            return "open_clip:resnet"
        return "open_clip:vit"
    if config is None:
        raise LayoutError(f"no {CONFIG} or {OPEN_CLIP_CONFIG}, so its model type is unknown; set stem_key and "
                          "preprocessing for it")
    if isinstance(config.get("model_type"), str):
        return config["model_type"]
    if isinstance(config.get("architecture"), str) and isinstance(config.get("pretrained_cfg"), dict):
        return "timm"
    raise LayoutError(f"its {CONFIG} names no model_type (nor a timm architecture); set stem_key and "
                      "preprocessing for it")


def rule_for(layout: str, table: dict[str, StemRule] | None = None) -> StemRule:
    table = table if table is not None else load_stem_table()
    if layout not in table:
        raise LayoutError(f"model type {layout!r} is not in hf_stems.csv; set stem_key (the stem tensor's name) and, "
                          "unless its preprocessor_config.json is one the table reads, preprocessing for it")
    return table[layout]


def config_value(config: dict, dotted: str):
    """config["a"]["b"][0] for "a.b.0"; KeyError when any step is missing."""
    value = config
    for part in dotted.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(dotted)
    return value


def _keyed_value(spec: str, config: dict) -> int:
    """An integer from config.json at the first of "<key>[|<key>...],<default>" present, else the default."""
    keys, _, default = spec.rpartition(",")
    for key in keys.split("|"):
        try:
            value = config_value(config, key)
        except KeyError:
            continue
        if isinstance(value, (list, tuple)):
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return int(default)


# The stem ----------------------------------------------------------------------------------------------------

def _timm_row(arch: str, first_conv: str | None) -> dict:
    rows = [row for row in load_timm_table(TIMM_STEM_TABLE).values() if row["arch"] == arch]
    if not rows:
        raise LayoutError(f"timm architecture {arch!r} is not in timm_stems.csv; set stem_key for it")
    row = rows[0]
    if first_conv and row["first_conv"] != first_conv:
        row = {**row, "first_conv": first_conv}
    return row


def _timm_template(rule: StemRule, config: dict | None, open_clip_config: dict | None) -> tuple[str, dict]:
    if rule.layout == "timm":
        arch = config["architecture"]
        declared = (config.get("pretrained_cfg") or {}).get("first_conv")
    else:
        arch = open_clip_config["model_cfg"]["vision_cfg"]["timm_model_name"]
        declared = None
    row = _timm_row(arch, declared if isinstance(declared, str) else None)
    if row["status"] != "ok":
        raise LayoutError(f"timm architecture {arch!r}: {row['status'].removeprefix('skipped: ')}")
    return rule.stem.replace("{first_conv}", row["first_conv"]), row


def matching_keys(rule: StemRule, name: str, header: dict[str, dict]) -> list[str]:
    if rule.match == "exact":
        return [name] if name in header else []
    return sorted(key for key in header if key == name or key.endswith("." + name))


def _rule_and_name(layout: str, config: dict, open_clip_config: dict | None, stem_key: str | None,
                   table: dict[str, StemRule] | None) -> tuple[StemRule | None, str | None, dict | None]:
    """The layout's row (None for an unknown layout with a stem_key), the stem's name in it, its timm row."""
    try:
        rule = rule_for(layout, table)
    except LayoutError:
        if stem_key is None:
            raise
        return None, None, None
    if rule.module_type == "timm":
        name, timm_row = _timm_template(rule, config, open_clip_config)
        return rule, name, timm_row
    return rule, rule.stem, None


def locate_stem(layout: str, config: dict | None, names, *, open_clip_config: dict | None = None,
                stem_key: str | None = None, table: dict[str, StemRule] | None = None) -> str:
    """The stem tensor's full name among `names` (a header's, or a sharded index's weight_map keys).

    Raises LayoutError saying what to set when none or several match.
    """
    rule, name, _ = _rule_and_name(layout, config or {}, open_clip_config, stem_key, table)
    if stem_key is not None:
        if stem_key not in names:
            raise LayoutError(f"stem_key {stem_key!r} names no tensor of its weights (their first: "
                              f"{sorted(names)[:5]}); fix stem_key for it")
        return stem_key
    found = matching_keys(rule, name, names)
    if not found:
        what = f"{name!r}" if rule.match == "exact" else f"'*{name}'"
        raise LayoutError(f"model type {layout!r}: its weights hold no tensor named {what} (their first: "
                          f"{sorted(names)[:5]}); set stem_key for it")
    if len(found) > 1:
        raise LayoutError(f"model type {layout!r}: {len(found)} tensors end in {name!r} ({found[:4]}); set stem_key "
                          "to the stem's")
    return found[0]


def plan_stem(layout: str, config: dict | None, header: dict[str, dict], *, open_clip_config: dict | None = None,
              stem_key: str | None = None, table: dict[str, StemRule] | None = None) -> StemPlan:
    """The stem of a repository of `layout` whose safetensors header (or its stem's shard's) is `header`.

    `stem_key` (the config's override) names the tensor; the layout's row then still gives its kind and stride
    where the repository has a layout the table knows, else it is read as a plain conv of stride unknown.
    Raises LayoutError saying what to set.
    """
    config = config or {}
    rule, _, timm_row = _rule_and_name(layout, config, open_clip_config, stem_key, table)
    key = locate_stem(layout, config, header, open_clip_config=open_clip_config, stem_key=stem_key, table=table)
    entry = header[key]
    shape, dtype = tuple(int(v) for v in entry["shape"]), entry["dtype"]
    if dtype not in FLOAT_SAFETENSORS_DTYPES:
        raise LayoutError(f"model type {layout!r}: its stem {key!r} is stored as {dtype}, not as floating-point "
                          "weights (a quantized repository?); study its float weights instead")
    module_type = (timm_row["module_type"] if timm_row else rule.module_type) if rule else "Conv2d"
    patch_layout = (timm_row.get("patch_layout") or None) if timm_row else (rule.patch_layout if rule else None)
    if len(shape) == 2:
        if timm_row:
            kernel = int(float(timm_row["kernel_size"]))
        elif rule is not None and rule.patch_size:
            kernel = _keyed_value(rule.patch_size, config)
        else:
            raise LayoutError(f"model type {layout!r}: its stem {key!r} is a matrix {list(shape)}, a linear patch "
                              "embedding whose patch size the table does not give; set stem_key to a conv weight")
        channels, remainder = divmod(shape[1], kernel * kernel)
        if remainder or channels == 0:
            raise LayoutError(f"model type {layout!r}: its stem {key!r} of shape {list(shape)} is no linear patch "
                              f"embedding of {kernel}x{kernel} patches; set stem_key for it")
        patch_layout = patch_layout or "chw"
        out = shape[0]
    elif len(shape) == 4:
        if shape[2] != shape[3]:
            raise LayoutError(f"model type {layout!r}: its stem {key!r} has a non-square {shape[2]}x{shape[3]} "
                              "kernel, which no square patch basis fits; set stem_key to another tensor")
        out, channels, kernel = shape[0], shape[1], shape[2]
    else:
        raise LayoutError(f"model type {layout!r}: its stem {key!r} has shape {list(shape)}, neither a conv weight nor "
                          "a patch embedding; set stem_key for it")
    if kernel < 2:
        raise LayoutError(f"model type {layout!r}: its stem {key!r} is 1x1: it only mixes colours, and has no spatial "
                          "patch basis; set stem_key to a spatial stem")
    if channels != 3:
        raise LayoutError(f"model type {layout!r}: its stem {key!r} takes {channels} input channels, not the 3 of "
                          "RGB images; set stem_key to a stem over RGB images (or leave the repository out)")
    stride = _stride(rule, timm_row, kernel, config)
    extra = (f"{key.removesuffix('.weight')}.gain",) if module_type.startswith("ScaledStdConv2d") else ()
    eps = table_number(timm_row["std_eps"]) if timm_row else (rule.std_eps if rule else None)
    return StemPlan(key=key, shape=shape, dtype=dtype, module_type=module_type, kernel_size=kernel,
                    in_chans=channels, out_channels=out, stride=stride, patch_layout=patch_layout,
                    std_eps=eps, std_scale=table_number(timm_row["std_scale"]) if timm_row else None,
                    extra_keys=extra)


def _stride(rule: StemRule | None, timm_row: dict | None, kernel: int, config: dict) -> int | None:
    if rule is None:
        return None
    if timm_row is not None:
        return int(float(timm_row["stride"])) if timm_row["stride"] else None
    if rule.stride == "patch":
        return kernel
    if rule.stride.startswith("config:"):
        return _keyed_value(rule.stride.removeprefix("config:"), config)
    return int(rule.stride)


# The eval preprocessing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalPreprocessing:
    preprocessing: Preprocessing
    channel_order: str = "rgb"  # "bgr" where the processor flips the channels (MobileViT)
    approximate: str | None = None  # what of the processor's transform Preprocessing does not reproduce exactly


def processor_name(preprocessor_config: dict) -> str:
    """The image processor's class as hf_image_processors.csv names it (Fast, Pil, FeatureExtractor folded)."""
    name = preprocessor_config.get("image_processor_type") or preprocessor_config.get("feature_extractor_type")
    if not isinstance(name, str):
        raise LayoutError(f"its {PREPROCESSOR_CONFIG} names no image_processor_type; set preprocessing for it")
    for suffix in ("Fast", "Pil"):
        name = name.removesuffix(suffix)
    return name.replace("FeatureExtractor", "ImageProcessor")


def _size_dict(value, default_to_square: bool, what: str) -> dict:
    """transformers' get_size_dict: an int is a square (default_to_square) or the shorter side; a pair (h, w)."""
    if isinstance(value, bool) or value is None:
        raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives {what} {value!r}; set preprocessing for it")
    if isinstance(value, int):
        return {"height": value, "width": value} if default_to_square else {"shortest_edge": value}
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return {"height": int(value[0]), "width": int(value[1])}
    if isinstance(value, dict):
        return value
    raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives {what} {value!r}; set preprocessing for it")


def _square(size: dict, what: str) -> int:
    if "height" in size and "width" in size:
        if size["height"] != size["width"]:
            raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives a non-square {what} {size['height']}x{size['width']}, "
                              "which Preprocessing cannot reproduce; set preprocessing for it")
        return int(size["height"])
    raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives {what} {size}; set preprocessing for it")


def _shorter_side(size: dict) -> int:
    if set(size) != {"shortest_edge"}:
        raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives size {size} (a longest_edge bound); set preprocessing for "
                          "it")
    return int(size["shortest_edge"])


def _channels(value, what: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives {what} {value!r}; set preprocessing for it")


def processor_preprocessing(preprocessor_config: dict, table: dict[str, dict] | None = None) -> EvalPreprocessing:
    """The eval transform a transformers image processor applies, from its preprocessor_config.json.

    Values the file leaves out take the processor class's defaults (hf_image_processors.csv). The affine part
    (rescale, its offset, normalisation, EfficientNet's second division by std) becomes one mean and std on the
    [0, 1] scale; channel flipping becomes channel_order "bgr".
    """
    table = table if table is not None else load_processor_table()
    name = processor_name(preprocessor_config)
    if name not in table:
        raise LayoutError(f"image processor {name} is not in hf_image_processors.csv; set preprocessing for it")
    row = table[name]

    def value(key):
        given = preprocessor_config.get(key)
        return row.get(key) if given is None else given

    resample = value("resample")
    interpolation = RESAMPLE.get(resample, resample) if isinstance(resample, int) else resample
    if interpolation not in INTERPOLATIONS:
        raise LayoutError(f"its {PREPROCESSOR_CONFIG} resamples with {interpolation!r}, which Preprocessing does not "
                          f"offer ({', '.join(INTERPOLATIONS)}); set preprocessing for it")
    resize, mode, crop, approximate = _geometry(row, value, preprocessor_config)
    if value("do_center_crop") and row["resize_rule"] != "naflex":
        crop = _square(_size_dict(value("crop_size"), True, "crop_size"), "crop_size")
    mean, std = _affine(row, value, preprocessor_config)
    return EvalPreprocessing(
        Preprocessing(resize=resize, crop=crop, interpolation=interpolation, mean=mean, std=std, resize_mode=mode),
        channel_order="bgr" if value("do_flip_channel_order") else "rgb",
        approximate=approximate)


def _geometry(row: dict, value, preprocessor_config: dict) -> tuple[int | None, str, int | None, str | None]:
    """(resize, resize_mode, crop, approximation) of the processor's resize rule, before its own centre crop."""
    rule = row["resize_rule"]
    if preprocessor_config.get("do_resize") is False:
        return None, "shorter", None, None
    if rule == "naflex":
        patch = int(preprocessor_config.get("patch_size") or 16)
        patches = int(preprocessor_config.get("max_num_patches") or 256)
        side = patch * math.isqrt(patches)
        return side, "squash", None, (f"each image is resized, its aspect ratio kept, to at most {patches} patches of "
                                      f"{patch}; taken as both sides to {side}")
    size = _size_dict(value("size"), bool(row["default_to_square"]), "size")
    if rule == "convnext":
        edge = _shorter_side(size)
        crop_pct = float(value("crop_pct"))
        if edge < 384:
            return int(edge / crop_pct), "shorter", edge, None
        return edge, "squash", None, None
    if rule == "levit" and "shortest_edge" in size:
        return int((256 / 224) * _shorter_side(size)), "shorter", None, None
    if rule == "poolformer" and value("crop_pct") is not None:
        crop_pct = float(value("crop_pct"))
        edge = _shorter_side(size) if "shortest_edge" in size else _square(size, "size")
        return int(edge / crop_pct), "shorter", None, None
    if "shortest_edge" in size:
        return _shorter_side(size), "shorter", None, None
    return _square(size, "size"), "squash", None, None


def _affine(row: dict, value, preprocessor_config: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor's pixel p -> ((p * factor + offset - mean) / std) [/ std], as (p / 255 - M) / S per channel."""
    factor = float(value("rescale_factor")) if preprocessor_config.get("do_rescale", True) is not False else 1.0
    offset = -1.0 if preprocessor_config.get("rescale_offset") else 0.0
    mean, std = _channels(value("image_mean"), "image_mean"), _channels(value("image_std"), "image_std")
    if len(mean) != len(std):
        raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives {len(mean)} means and {len(std)} stds; set preprocessing "
                          "for it")
    normalise, top = value("do_normalize"), value("include_top")
    scale = 255.0 * factor
    means, stds = [], []
    for m, s in zip(mean, std):
        centre, spread = (m, s) if normalise else (0.0, 1.0)
        if top:
            spread *= s
        if spread <= 0:
            raise LayoutError(f"its {PREPROCESSOR_CONFIG} gives image_std {list(std)}; set preprocessing for it")
        means.append((centre - offset) / scale)
        stds.append(spread / scale)
    return tuple(means), tuple(stds)


def open_clip_preprocessing(open_clip_config: dict) -> EvalPreprocessing:
    """OpenCLIP's eval transform (open_clip/transform.py image_transform, is_train=False) from open_clip_config.json.

    Shorter side to the tower's image_size and a centre crop of it (resize_mode "shortest", the default), or both
    sides to it ("squash"); bicubic unless the file says bilinear; OpenAI's mean and std unless it gives others.
    """
    vision = (open_clip_config.get("model_cfg") or {}).get("vision_cfg") or {}
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise LayoutError(f"its {OPEN_CLIP_CONFIG} gives a non-square image_size {size}; set preprocessing for it")
        size = size[0]
    cfg = open_clip_config.get("preprocess_cfg") or {}
    interpolation = cfg.get("interpolation") or "bicubic"
    mode = cfg.get("resize_mode") or "shortest"
    if mode not in ("shortest", "squash"):
        raise LayoutError(f"its {OPEN_CLIP_CONFIG} gives resize_mode {mode!r} (a resize that pads), which "
                          "Preprocessing does not reproduce; set preprocessing for it")
    mean = tuple(cfg.get("mean") or OPENAI_CLIP_MEAN)
    std = tuple(cfg.get("std") or OPENAI_CLIP_STD)
    return EvalPreprocessing(Preprocessing(
        resize=int(size), crop=int(size) if mode == "shortest" else None,
        interpolation="bilinear" if interpolation == "bilinear" else "bicubic", mean=mean, std=std,
        resize_mode="shorter" if mode == "shortest" else "squash"))


def timm_config_preprocessing(config: dict) -> EvalPreprocessing:
    """timm's eval transform from the pretrained_cfg a timm repository's config.json carries."""
    return EvalPreprocessing(Preprocessing.from_timm_cfg(config["pretrained_cfg"]))


def eval_preprocessing(layout: str, config: dict | None, preprocessor_config: dict | None,
                       open_clip_config: dict | None, table: dict[str, StemRule] | None = None) -> EvalPreprocessing:
    """The eval preprocessing of a repository of `layout` from whichever file its table row names."""
    source = rule_for(layout, table).preprocessing
    if source == OPEN_CLIP_CONFIG:
        return open_clip_preprocessing(open_clip_config or {})
    if source == CONFIG:
        return timm_config_preprocessing(config or {})
    if preprocessor_config is None:
        raise LayoutError(f"model type {layout!r}: the repository has no {PREPROCESSOR_CONFIG}; set preprocessing for "
                          "it")
    return processor_preprocessing(preprocessor_config)
