"""timm's pretrained zoo as data: one table row per tag (stem geometry and eval preprocessing).

The table (workflow/resources/timm_stems.csv) is built once by
scripts/dev/build_timm_stem_table.py so that planning a study over the whole
zoo reads a CSV instead of building models.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..downloads import FETCH_FIRST, DownloadError, NetworkError, RangeNotSupported, RetryPolicy, endpoint_of
from ..paths import TIMM_STEM_TABLE
from ..preprocessing import Preprocessing
from ..records import CheckpointSpec
from ..checkpoint_io import load_torch_state_dict, read_tensor
from ..remote_tensors import read_remote_safetensors
from ..stems import Stem, StemError, validate_conv_weight
from ..zoo_source import ZooSource, register

TIMM_TABLE_COLUMNS = [
    "tag", "arch", "first_conv", "module_type", "kernel_size", "in_chans", "out_channels", "stride",
    "std_eps", "std_scale", "input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std",
    "hf_hub_id", "hf_hub_filename", "dataset_tag", "default_tag", "patch_layout", "status",
]
WEIGHT_STANDARDISED = ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")
SCALED = ("ScaledStdConv2d", "ScaledStdConv2dSame")
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


def _number(value) -> float | None:
    return None if value in (None, "") else float(value)


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
        if spec_extra.get("patch_layout") == "hwc":
            weight = weight.reshape(weight.shape[0], kernel, kernel, chans).transpose(0, 3, 1, 2)
        else:
            weight = weight.reshape(weight.shape[0], chans, kernel, kernel)
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


@register
class TimmSource(ZooSource):
    """timm pretrained tags (names and glob patterns), weights from the Hugging Face Hub.

    Planning reads the committed stem table; only tags missing from it build a
    model (on the meta device, cached). The stem is read from model.safetensors
    with Range requests; a repository with only a pickle is downloaded whole.
    """

    source = "timm"
    remote = True

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
        row = self.cache.get(json.dumps(["timm-tag", name]), lambda: _build_row(name))
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
                    "std_eps": _number(row["std_eps"]),
                    "std_scale": _number(row["std_scale"]),
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
                    meta={"uri": spec.uri, "file_size": fetched.file_size, "bytes_fetched": fetched.bytes_fetched,
                          **fetched.metadata})


def _build_row(tag: str) -> dict:
    """A table row for a tag the committed table lacks: the model is built on the meta device."""
    import timm
    import torch

    try:
        cfg = timm.models.get_pretrained_cfg(tag)
    except RuntimeError:  # the architecture exists, the tag does not
        cfg = None
    if cfg is None:
        return {"tag": tag, "status": f"skipped: {tag!r} is not a timm pretrained tag"}
    try:
        with torch.device("meta"):
            model = timm.create_model(tag.split(".")[0], pretrained=False)
        error = None
    except Exception as failure:  # noqa: BLE001 - reported in the row's status
        model, error = None, f"{type(failure).__name__}: {failure}"[:200]
    row = stem_row(tag, cfg.to_dict(), model, error)
    row.update(dataset_tag=dataset_tag(tag), default_tag=False)
    return {column: ("" if row.get(column) is None else str(row[column])) for column in TIMM_TABLE_COLUMNS}


@dataclass
class HubTensors:
    tensors: dict[str, np.ndarray]
    file_size: int | None
    bytes_fetched: int
    metadata: dict


# What to do on a machine that cannot connect to the Hub.
HUB_WAYS_OUT = ("set HF_ENDPOINT to a mirror this machine reaches, or fill the Hugging Face cache where there is "
                "network and run here with HF_HUB_OFFLINE=1 (same HF_HOME): " + FETCH_FIRST.removeprefix("or "))


def _weights_files(filename: str | None) -> list[str]:
    return [filename] if filename else ["model.safetensors", "pytorch_model.bin"]


def hub_file_metadata(url: str, endpoint: str | None, policy: RetryPolicy = RetryPolicy()):
    """huggingface_hub's HEAD of a Hub file, retried on 429 and 5xx answers.

    Transport failures (no connection, a timeout) are given `policy.connect_attempts`
    tries, then reported as one NetworkError that says what to do, not as the client's traceback.
    """
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    failures = 0
    for attempt in range(policy.attempts):
        try:
            return get_hf_file_metadata(url, endpoint=endpoint, retry_on_errors=False)
        except (HfHubHTTPError, OfflineModeIsEnabled) as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            if status not in (429, 500, 502, 503, 504) or attempt + 1 == policy.attempts:
                raise
        except Exception as error:  # noqa: BLE001 - the HTTP client's transport errors, whichever client it is
            if not (isinstance(error, OSError) or type(error).__module__.split(".")[0].startswith("httpx")):
                raise
            failures += 1
            if failures >= policy.connect_attempts:
                raise NetworkError(endpoint_of(url), f"{type(error).__name__}: {error}", HUB_WAYS_OUT) from None
        policy.wait(attempt)
    raise AssertionError("the loop returns or raises")


def cached_hub_file(repo_id: str, revision: str, filename: str | None) -> tuple[str, str] | None:
    """(filename, path) of the repository's weights in the Hugging Face cache, if they are there."""
    from huggingface_hub import try_to_load_from_cache

    for candidate in _weights_files(filename):
        path = try_to_load_from_cache(repo_id, candidate, revision=revision)
        if isinstance(path, str):
            return candidate, path
    return None


def read_hub_file(path: str, keys: list[str], where: str) -> dict[str, np.ndarray]:
    """Tensors from a weights file on disk: safetensors by key, a pickle through a weights-only load."""
    if path.endswith(".safetensors"):
        return {key: read_tensor(path, key)[1] for key in keys}
    state = load_torch_state_dict(path)
    missing = [key for key in keys if key not in state]
    if missing:
        raise StemError(f"{where}: no tensor named {missing[0]!r}")
    return {key: state[key].float().numpy().astype(np.float64) for key in keys}


def download_hub_weights(repo_id: str, revision: str, filename: str | None = None) -> str:
    """The repository's weights file, downloaded whole into the Hugging Face cache, for offline runs later."""
    from huggingface_hub import hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT")
    for candidate in _weights_files(filename):
        try:
            hub_file_metadata(hf_hub_url(repo_id, candidate, revision=revision, endpoint=endpoint), endpoint)
        except EntryNotFoundError:
            continue
        return hf_hub_download(repo_id, candidate, revision=revision, endpoint=endpoint)
    raise StemError(f"{repo_id}@{revision}: none of {_weights_files(filename)} exists; check the revision")


def fetch_hub_tensors(repo_id: str, revision: str, keys: list[str], filename: str | None = None) -> HubTensors:
    """The named tensors of a Hub repository's weights, fetching as little as the file format allows.

    model.safetensors is read with Range requests (header, then each tensor);
    a repository that only has a pickle (pytorch_model.bin) is downloaded
    whole into huggingface_hub's cache and loaded with weights_only.
    HF_ENDPOINT and HF_TOKEN are honoured; the revision is resolved to its commit.
    With HF_HUB_OFFLINE=1 the weights are read from the cache (see download_hub_weights).
    """
    from huggingface_hub import hf_hub_download, hf_hub_url
    from huggingface_hub.constants import HF_HUB_CACHE, is_offline_mode
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import build_hf_headers

    if is_offline_mode():
        cached = cached_hub_file(repo_id, revision, filename)
        if cached is None:
            raise DownloadError(f"{repo_id}@{revision}: HF_HUB_OFFLINE=1 and its weights are not in the Hugging Face "
                                f"cache ({HF_HUB_CACHE}); " + FETCH_FIRST.removeprefix("or "))
        candidate, path = cached
        size = Path(path).stat().st_size
        return HubTensors(read_hub_file(path, keys, f"{repo_id}/{candidate}"), size, 0,
                          {"filename": candidate, "fetch": "cache"})
    endpoint = os.environ.get("HF_ENDPOINT")
    candidates = _weights_files(filename)
    for candidate in candidates:
        url = hf_hub_url(repo_id, candidate, revision=revision, endpoint=endpoint)
        try:
            meta = hub_file_metadata(url, endpoint)
        except EntryNotFoundError:
            continue
        except RevisionNotFoundError:
            raise DownloadError(f"{repo_id}: the Hub has no revision {revision!r}; fix the zoo's revision or "
                                "revisions entry in the config") from None
        provenance = {"filename": candidate, "commit": meta.commit_hash, "etag": meta.etag}
        if candidate.endswith(".safetensors"):
            headers = build_hf_headers()
            if urllib.parse.urlsplit(meta.location).netloc != urllib.parse.urlsplit(url).netloc:
                headers.pop("authorization", None)  # a signed CDN URL must not receive the token
            try:
                remote = read_remote_safetensors(meta.location, keys, headers=headers,
                                                 optional=tuple(keys[1:]))
                return HubTensors(remote.tensors, remote.file_size or meta.size, remote.bytes_fetched,
                                  {**provenance, "fetch": "range"})
            except RangeNotSupported:
                print(f"{repo_id}: the server ignores Range requests: downloading all {meta.size} bytes of {candidate}")
            except NetworkError as error:
                raise NetworkError(error.endpoint, error.reason, HUB_WAYS_OUT) from None
            path = hf_hub_download(repo_id, candidate, revision=meta.commit_hash or revision, endpoint=endpoint)
            return HubTensors(read_hub_file(path, keys, f"{repo_id}/{candidate}"), meta.size, meta.size,
                              {**provenance, "fetch": "full"})
        print(f"{repo_id}: {candidate} is a pickle, which cannot be read in ranges: downloading all "
              f"{meta.size} bytes")
        path = hf_hub_download(repo_id, candidate, revision=meta.commit_hash or revision, endpoint=endpoint)
        return HubTensors(read_hub_file(path, keys, f"{repo_id}/{candidate}"), meta.size,
                          meta.size or Path(path).stat().st_size, {**provenance, "fetch": "full"})
    raise StemError(f"{repo_id}@{revision}: none of {candidates} exists; check the revision in the config")
