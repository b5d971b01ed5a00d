"""timm's pretrained zoo as data: the committed stem table (one row per tag: stem geometry, eval preprocessing).

The table (workflow/resources/timm_stems.csv) is built once by
scripts/dev/build_timm_stem_table.py (with timm_table_build.py) so that
planning a study over the whole zoo reads a CSV instead of building models.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .paths import TIMM_STEM_TABLE
from .preprocessing import Preprocessing

TIMM_TABLE_COLUMNS = [
    "tag", "arch", "first_conv", "module_type", "kernel_size", "in_chans", "out_channels", "stride",
    "std_eps", "std_scale", "input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std",
    "hf_hub_id", "hf_hub_filename", "dataset_tag", "default_tag", "patch_layout", "status",
]


def eval_preprocessing(row: dict) -> Preprocessing:
    """timm's eval transform of a table row (see Preprocessing.from_timm_cfg)."""
    return Preprocessing.from_timm_cfg({
        "input_size": json.loads(row["input_size"]),
        "crop_pct": float(row["crop_pct"]) if row.get("crop_pct") not in (None, "") else None,
        "crop_mode": row.get("crop_mode"),
        "interpolation": row.get("interpolation"),
        "mean": json.loads(row["mean"]),
        "std": json.loads(row["std"]),
    })


@lru_cache(maxsize=2)
def load_timm_table(path: str | Path = TIMM_STEM_TABLE) -> dict[str, dict]:
    """The committed table by tag; values as the CSV module reads them (empty string = unknown)."""
    import csv

    with open(path, newline="") as handle:
        return {row["tag"]: row for row in csv.DictReader(handle)}


def table_number(value) -> float | None:
    return None if value in (None, "") else float(value)
