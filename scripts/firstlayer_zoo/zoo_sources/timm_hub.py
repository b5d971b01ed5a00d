"""The `timm` zoo source: timm's pretrained tags (names and glob patterns), weights from the Hugging Face Hub."""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path

from ..hf_hub import download_hub_weights, fetch_hub_tensors
from ..paths import TIMM_STEM_TABLE
from ..records import CheckpointSpec
from ..stems import Stem, StemError, validate_conv_weight
from ..timm_table import eval_preprocessing, load_timm_table, table_number
from ..timm_table_build import build_row
from ..weight_standardisation import SCALED, effective_filters
from .base import ZooSource, register


@register
class TimmSource(ZooSource):
    """timm pretrained tags (names and glob patterns), weights from the Hugging Face Hub.

    Planning reads the committed stem table; only tags missing from it build a
    model (on the meta device, cached). The stem is read from model.safetensors
    with Range requests; a repository with only a pickle is downloaded whole.
    """

    source = "timm"
    remote = True
    # From the committed stem table (what the reader needs to read and standardise the stem) and the Hub file.
    spec_fields = {"hf_hub_filename": str, "revision": str, "module_type": str, "kernel_size": int, "in_chans": int,
                   "std_eps": float, "std_scale": float, "dataset_tag": str, "patch_layout": str, "table_status": str}
    stem_fields = {"file_size": int, "bytes_fetched": int, "filename": str, "commit": str, "etag": str, "fetch": str}

    def _resolve(self) -> list[dict]:
        table = load_timm_table(self.options.get("table") or TIMM_STEM_TABLE)
        exclude = self.options.get("exclude", [])
        rows, seen = [], set()
        for pattern in self.options["models"]:
            if any(char in pattern for char in "*?["):
                found = [table[tag] for tag in sorted(table) if fnmatch.fnmatchcase(tag, pattern)]
                if not found:
                    raise ValueError(f"zoos.{self.name}.models: {pattern!r} matches no timm pretrained tag")
            else:
                found = [self._row(pattern, table)]
            for row in found:
                if row["tag"] in seen or any(fnmatch.fnmatchcase(row["tag"], ex) for ex in exclude):
                    continue
                seen.add(row["tag"])
                if row.get("kernel_size") in ("", None):
                    # No stem geometry means no patch basis to plan: the tag cannot be studied at all.
                    print(f"zoos.{self.name}: leaving out {row['tag']}: {row['status']}", file=sys.stderr)
                    continue
                rows.append(row)
        return rows

    def _row(self, name: str, table: dict[str, dict]) -> dict:
        if "." not in name:
            defaults = [row for row in table.values() if row["arch"] == name and row["default_tag"] == "True"]
            if defaults:
                return defaults[0]
        if name in table:
            return table[name]
        row = self.cache.get(json.dumps(["timm-tag", name]), lambda: build_row(name))
        if row["status"].startswith("skipped: ") and "is not a timm pretrained tag" in row["status"]:
            raise ValueError(f"zoos.{self.name}.models: {name!r} is not a timm pretrained tag "
                             "(see timm.list_models(pretrained=True))")
        return row

    def checkpoints(self) -> list[CheckpointSpec]:
        revisions = self.options.get("revisions", {})
        specs = []
        for row in self._resolve():
            prep = eval_preprocessing(row)
            kernel, chans = int(float(row["kernel_size"])), int(float(row["in_chans"]))
            ok = row["status"] == "ok"
            revision = revisions.get(row["tag"], self.options.get("revision", "main"))
            specs.append(CheckpointSpec(
                zoo=self.name,
                name=row["tag"],
                source=self.source,
                arch=row["arch"],
                locator=row["hf_hub_id"],  # the Hub repository; empty where timm names none
                label=f"hf://{row['hf_hub_id']}@{revision}",
                stride=int(float(row["stride"])),
                first_conv=row["first_conv"],
                kernel_size=kernel,
                # A stem that takes no image channels (TResNet's space-to-depth) is planned against the
                # image's basis and reported as skipped by its extract job.
                in_chans=chans if ok else prep.in_chans,
                dataset=self.options["dataset"],
                preprocessing=prep,
                extra={
                    "hf_hub_filename": row["hf_hub_filename"] or None,
                    "revision": revision,
                    "module_type": row["module_type"],
                    "kernel_size": kernel,
                    "in_chans": chans,
                    "std_eps": table_number(row["std_eps"]),
                    "std_scale": table_number(row["std_scale"]),
                    "dataset_tag": row["dataset_tag"] or None,
                    "patch_layout": row.get("patch_layout") or None,
                    "table_status": row["status"],
                },
            ))
        return specs

    @classmethod
    def fetch(cls, spec: CheckpointSpec) -> dict:
        extra = spec.extra
        if extra["table_status"] != "ok" or not spec.locator:
            return {"fetched": None, "why": "nothing to fetch: its stem cannot be analysed"}
        path = download_hub_weights(spec.locator, extra["revision"], extra["hf_hub_filename"])
        return {"fetched": path, "bytes": Path(path).stat().st_size}

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        extra = spec.extra
        if extra["table_status"] != "ok":
            raise StemError(extra["table_status"].removeprefix("skipped: "))
        if not spec.locator:
            raise StemError(f"{spec.name}: timm names no Hugging Face Hub repository for its weights")
        keys = [f"{spec.first_conv}.weight"]
        if extra["module_type"] in SCALED:
            keys.append(f"{spec.first_conv}.gain")
        fetched = fetch_hub_tensors(spec.locator, extra["revision"], keys, extra["hf_hub_filename"])
        weight = validate_conv_weight(effective_filters(fetched.tensors, extra, spec.first_conv), spec.uri)
        return Stem(weight=weight, init=None, stride=spec.stride, first_conv=spec.first_conv,
                    meta={"file_size": fetched.file_size, "bytes_fetched": fetched.bytes_fetched,
                          **fetched.metadata})
