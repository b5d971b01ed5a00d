"""A Hub zoo's repositories pinned: the index its resolution job writes and its checkpoints are planned from.

`resolve` turns repository ids (revisions optional) and a search of the Hub's listing into an index: for each
repository its commit, weights file, stem tensor (name, shape, dtype, the byte range it occupies), eval
preprocessing and declared base model, or why it cannot be studied (`skipped: ...`, naming the model type and
what to set). It reads config files, card metadata and safetensors headers only; a repository with a pickle
alone is downloaded whole into the Hugging Face cache, where its stem read finds it. Given the previous index,
a repository whose commit (and options) did not change keeps its entry without a request.

`read_stem` reads one indexed stem: one Range request for its bytes (the header was read by the resolution),
or the cached file offline.
"""

from __future__ import annotations

import contextvars
import fnmatch
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint_io import load_torch_state_dict
from .downloads import DownloadError, RetryPolicy
from .hf_table import (CONFIG, OPEN_CLIP_CONFIG, PREPROCESSOR_CONFIG, LayoutError, StemPlan, eval_preprocessing,
                       locate_stem, plan_stem, processor_preprocessing, repository_layout, rule_for)
from .hub_api import (Fetched, HubSearch, RepositoryUnavailable, download_file, list_models, model_info,
                      read_header, read_json_file, read_tensors)
from .preprocessing import Preprocessing
from .stems import Stem, StemError, validate_conv_weight

INDEX_VERSION = 2  # 2: the search's own listing kept (`listed`), for pinned reruns
# A repository's weights, in the order they are preferred: safetensors (read in ranges) before pickles.
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


@dataclass(frozen=True)
class RepoRequest:
    """One repository as the config names it; stem_key and preprocessing override what the tables give."""

    repo: str
    revision: str | None = None
    stem_key: str | None = None
    preprocessing: Preprocessing | None = None

    def options(self) -> dict:
        """What, besides the commit, its entry depends on."""
        return {"stem_key": self.stem_key,
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None}


@dataclass(frozen=True)
class HubRequest:
    """What a Hub zoo asks for: repositories by id, a search of the listing, globs to leave out."""

    models: tuple[RepoRequest, ...] = ()
    search: HubSearch | None = None
    exclude: tuple[str, ...] = ()
    stem_keys: dict = field(default_factory=dict)  # repository id -> its stem's tensor name
    preprocessing: Preprocessing | None = None  # for repositories whose own eval preprocessing cannot be read
    init_base_model: bool = False

    @classmethod
    def from_options(cls, options: dict) -> "HubRequest":
        """From a zoo's config: models (ids, `id@revision` or {repo, revision, stem_key, preprocessing}),
        search, exclude, stem_key ({repository: tensor}), preprocessing, init (`base_model`)."""
        models = []
        for item in options.get("models") or []:
            if isinstance(item, str):
                repo, _, revision = item.partition("@")
                models.append(RepoRequest(repo, revision or None))
            else:
                prep = item.get("preprocessing")
                models.append(RepoRequest(item["repo"], item.get("revision"), item.get("stem_key"),
                                          Preprocessing.from_dict(prep) if prep else None))
        search = options.get("search")
        prep = options.get("preprocessing")
        return cls(models=tuple(models), search=HubSearch.from_dict(search) if search else None,
                   exclude=tuple(options.get("exclude") or ()), stem_keys=dict(options.get("stem_key") or {}),
                   preprocessing=Preprocessing.from_dict(prep) if prep else None,
                   init_base_model=options.get("init") == "base_model")

    def to_dict(self) -> dict:
        return {"models": [{"repo": m.repo, "revision": m.revision, **m.options()} for m in self.models],
                "search": self.search.to_dict() if self.search else None, "exclude": list(self.exclude),
                "stem_keys": self.stem_keys,
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
                "init_base_model": self.init_base_model}

    def excluded(self, repo: str) -> bool:
        return any(fnmatch.fnmatchcase(repo, pattern) for pattern in self.exclude)


def resolve(request: HubRequest, previous: dict | None = None, *, pinned: bool = False,
            policy: RetryPolicy = RetryPolicy(), workers: int = 8, log=print) -> dict:
    """The index of every repository the request names or its search lists (see the module's docstring).

    pinned: the previous index stands where the request has not changed: the search it listed is not listed again,
    and a repository it resolved (at the same revision and options) is not asked again, so its commit stays.
    Otherwise (a refresh) the search is listed again and every repository's commit asked; only those whose commit
    or options changed are resolved again.

    Raises DownloadError (NetworkError where the Hub cannot be reached): the listing, or any repository's
    transfer, failing for a reason a rerun may not share fails the whole resolution.
    """
    fetched = Fetched()
    previous_entries = _reusable(previous, request)
    kept = previous_entries if pinned else {}
    candidates: dict[str, tuple[RepoRequest, dict | None]] = {}
    excluded = []
    for wanted in request.models:
        if request.excluded(wanted.repo):
            excluded.append(wanted.repo)
        else:
            candidates.setdefault(wanted.repo, (_with_stem_key(wanted, request), None))
    listed: list[str] = []
    if request.search is not None:
        search = request.search.to_dict()
        if pinned and previous_entries and (previous.get("request") or {}).get("search") == search:
            found = [(repo, None) for repo in previous.get("listed", [])]
        else:
            found = [(info["id"], info) for info in list_models(request.search, policy=policy, fetched=fetched)]
        for repo, info in found:
            listed.append(repo)
            if request.excluded(repo):
                excluded.append(repo)
            elif repo not in candidates:
                candidates[repo] = (_with_stem_key(RepoRequest(repo), request), info)
    entries = _in_parallel(workers, [
        (_kept_or_resolved, (wanted, info, request, previous_entries.get(wanted.repo), kept, policy, log))
        for wanted, info in candidates.values()])
    index = {"version": INDEX_VERSION, "request": request.to_dict(), "order": list(candidates), "listed": listed,
             "entries": {entry["repo"]: entry for entry in entries}, "excluded": sorted(set(excluded)), "bases": {}}
    if request.init_base_model:
        _resolve_bases(index, request, previous_entries, kept, policy, workers, log)
    now = [entry for entry in [*index["entries"].values(), *index["bases"].values()] if not entry.get("reused")]
    index["bytes_fetched"] = fetched.total + sum(entry["bytes_fetched"] for entry in now)
    index["resolved"] = len(now)
    return index


def _kept_or_resolved(wanted: RepoRequest, info: dict | None, request: HubRequest, previous: dict | None,
                      kept: dict[str, dict], policy: RetryPolicy, log) -> dict:
    """The pinned entry of a repository (`kept`, asked for at the same revision and options), or it resolved."""
    prior = kept.get(wanted.repo)
    if prior is not None and not prior.get("unavailable") and prior.get("revision") == (wanted.revision or "main") \
            and prior.get("options") == wanted.options():
        return {**prior, "reused": True}
    return _resolve_one(wanted, info, request, previous, policy, log)


def _with_stem_key(wanted: RepoRequest, request: HubRequest) -> RepoRequest:
    if wanted.stem_key is None and wanted.repo in request.stem_keys:
        return RepoRequest(wanted.repo, wanted.revision, request.stem_keys[wanted.repo], wanted.preprocessing)
    return wanted


def _reusable(previous: dict | None, request: HubRequest) -> dict[str, dict]:
    """The previous index's entries (and bases) by repository, if it was written by this version."""
    if not previous or previous.get("version") != INDEX_VERSION:
        return {}
    if (previous.get("request") or {}).get("preprocessing") != request.to_dict()["preprocessing"]:
        return {}
    return {**previous.get("bases", {}), **previous.get("entries", {})}


def _in_parallel(workers: int, calls: list) -> list:
    """calls [(function, args)] on `workers` threads, each in a copy of this context (limits are a ContextVar)."""
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(calls)))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, function, *args) for function, args in calls]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _resolve_one(wanted: RepoRequest, info: dict | None, request: HubRequest, previous: dict | None,
                 policy: RetryPolicy, log) -> dict:
    entry = {"repo": wanted.repo, "revision": wanted.revision or "main", "options": wanted.options(),
             "status": "ok", "bytes_fetched": 0}
    fetched = Fetched()
    try:
        if info is None or "sha" not in info or "siblings" not in info:
            info = model_info(wanted.repo, wanted.revision, policy=policy, fetched=fetched)
        entry.update(_card(info))
        if previous and previous.get("commit") == entry["commit"] and previous.get("options") == entry["options"]:
            return {**previous, **{key: entry[key] for key in ("downloads", "likes")}, "reused": True}
        entry.update(_resolve_files(wanted, info, entry["commit"], request, policy, fetched))
    except StemError as error:  # LayoutError, RepositoryUnavailable, a header past limits or corrupt
        entry["status"] = f"skipped: {_named(wanted.repo, error)}"
        if isinstance(error, RepositoryUnavailable):
            entry["unavailable"] = True  # the Hub's refusal (a token, a name), not its files: asked again next time
    except DownloadError:
        raise
    except Exception as error:  # noqa: BLE001 - one repository's files must never stop the resolution
        entry["status"] = (f"skipped: {wanted.repo}: its files could not be read ({type(error).__name__}), a corrupt "
                           "or hostile repository; leave it out (exclude), or set stem_key and preprocessing for it")
    entry["bytes_fetched"] = fetched.total
    log(f"{wanted.repo}@{str(entry.get('commit'))[:12]}: "
        + (f"{entry['stem']['key']} {entry['stem']['shape']}" if entry["status"] == "ok" else entry["status"]))
    return entry


def _named(repo: str, error: Exception) -> str:
    text = str(error)
    return text if text.startswith(repo) else f"{repo}: {text}"


def _card(info: dict) -> dict:
    """What the model info says of a repository besides its files: commit, library, task, downloads, base model."""
    card = info.get("cardData") if isinstance(info.get("cardData"), dict) else {}
    base, note = card.get("base_model"), None
    if isinstance(base, list):
        base, note = (base[0], None) if len(base) == 1 and isinstance(base[0], str) else \
            (None, f"its card names {len(base)} base models (a merge?)")
    elif base is not None and not isinstance(base, str):
        base, note = None, "its card's base_model is not a repository id"
    elif base is None:
        note = "its card names no base_model"
    return {"commit": info["sha"], "library": info.get("library_name"), "pipeline_tag": info.get("pipeline_tag"),
            "downloads": info.get("downloads"), "likes": info.get("likes"), "gated": bool(info.get("gated")),
            "base_model": base, "base_model_relation": card.get("base_model_relation"), "base_model_note": note}


def _resolve_files(wanted: RepoRequest, info: dict, commit: str, request: HubRequest, policy: RetryPolicy,
                   fetched: Fetched) -> dict:
    repo = wanted.repo
    files = {item.get("rfilename") for item in info.get("siblings") or [] if isinstance(item, dict)}
    open_clip_config = read_json_file(repo, commit, OPEN_CLIP_CONFIG, policy=policy, fetched=fetched) \
        if OPEN_CLIP_CONFIG in files else None
    config = read_json_file(repo, commit, CONFIG, policy=policy, fetched=fetched) if CONFIG in files else None
    processor = read_json_file(repo, commit, PREPROCESSOR_CONFIG, policy=policy, fetched=fetched) \
        if PREPROCESSOR_CONFIG in files and open_clip_config is None else None
    try:
        layout = repository_layout(config, open_clip_config)
    except LayoutError:
        if wanted.stem_key is None:
            raise
        layout = "unknown"
    known = _known(layout)
    preferred = OPEN_CLIP_WEIGHTS if layout.startswith("open_clip:") else WEIGHTS
    weights = next((name for name in preferred if name in files), None)
    if weights is None:
        raise LayoutError(f"model type {layout!r}: it holds none of {list(preferred)} (an adapter, ONNX or other "
                          "format?); leave it out (exclude)")
    plan, stem = _plan(wanted, layout, config, open_clip_config, weights, files, commit, policy, fetched)
    prep, source = _preprocessing(wanted, request, layout if known else None, config, processor, open_clip_config)
    return {"layout": layout, "model_type": (config or {}).get("model_type") if isinstance(config, dict) else None,
            "stem": {**plan.to_dict(), **stem}, "preprocessing": prep.preprocessing.to_dict(),
            "channel_order": prep.channel_order, "approximate": prep.approximate, "preprocessing_source": source}


def _known(layout: str) -> bool:
    try:
        rule_for(layout)
        return True
    except LayoutError:
        return False


def _plan(wanted: RepoRequest, layout: str, config: dict | None, open_clip_config: dict | None, weights: str,
          files: set, commit: str, policy: RetryPolicy, fetched: Fetched) -> tuple[StemPlan, dict]:
    """The stem's plan and where to read it: its file, format, byte range (safetensors) and size."""
    repo = wanted.repo
    kwargs = {"open_clip_config": open_clip_config, "stem_key": wanted.stem_key}
    filename = weights
    if weights.endswith(".index.json"):
        index = read_json_file(repo, commit, weights, policy=policy, fetched=fetched) or {}
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise LayoutError(f"its {weights} holds no weight_map of tensor names to files; fetch it again")
        filename = weight_map[locate_stem(layout, config, weight_map, **kwargs)]
        if filename not in files or ".." in filename.split("/") or filename.startswith("/"):
            raise LayoutError(f"its {weights} places the stem in {filename!r}, which is not a file of the repository")
    if filename.endswith(".safetensors"):
        remote = read_header(repo, commit, filename, policy=policy, fetched=fetched)
        plan = plan_stem(layout, config, remote.header, **kwargs)
        missing = [key for key in plan.extra_keys if key not in remote.header]
        if missing:
            raise LayoutError(f"its stem needs {missing[0]!r}, which {filename} does not hold; set stem_key for it")
        return plan, {"file": filename, "format": "safetensors", "file_size": remote.file_size,
                      "data_start": remote.data_start,
                      "entries": {key: remote.header[key] for key in (plan.key, *plan.extra_keys)}}
    path = download_file(repo, commit, filename)
    size = Path(path).stat().st_size
    fetched.files += size
    state = load_torch_state_dict(path)
    header = {name: {"dtype": TORCH_DTYPES.get(str(value.dtype).removeprefix("torch."), str(value.dtype)),
                     "shape": list(value.shape)} for name, value in state.items() if hasattr(value, "shape")}
    plan = plan_stem(layout, config, header, **kwargs)
    return plan, {"file": filename, "format": "pickle", "file_size": size, "data_start": None,
                  "entries": {key: header[key] for key in (plan.key, *plan.extra_keys) if key in header}}


def _preprocessing(wanted: RepoRequest, request: HubRequest, layout: str | None, config, processor,
                   open_clip_config):
    """The eval preprocessing and where it came from: the repository's entry, its files, or the zoo's fallback."""
    from .hf_table import EvalPreprocessing

    if wanted.preprocessing is not None:
        return EvalPreprocessing(wanted.preprocessing), "config (models entry)"
    try:
        if layout is not None:
            return eval_preprocessing(layout, config, processor, open_clip_config), "repository"
        if processor is not None:
            return processor_preprocessing(processor), "repository"
        raise LayoutError(f"model type unknown and no {PREPROCESSOR_CONFIG}: set preprocessing for it")
    except LayoutError:
        if request.preprocessing is None:
            raise
        return EvalPreprocessing(request.preprocessing), "config (zoo preprocessing)"


def _resolve_bases(index: dict, request: HubRequest, previous: dict, kept: dict, policy: RetryPolicy, workers: int,
                   log) -> None:
    """Each fine-tune's declared base model, resolved the same way, and the init it gives (or why none)."""
    wanted = sorted({entry["base_model"] for entry in index["entries"].values()
                     if entry["status"] == "ok" and entry.get("base_model")} - set(index["entries"]))
    bases = _in_parallel(workers, [(_kept_or_resolved, (_with_stem_key(RepoRequest(repo), request), None, request,
                                                        previous.get(repo), kept, policy, log)) for repo in wanted])
    index["bases"] = {entry["repo"]: entry for entry in bases}
    for entry in index["entries"].values():
        entry["init"] = init_of(entry, {**index["entries"], **index["bases"]})


def init_of(entry: dict, known: dict[str, dict]) -> dict:
    """The initialisation a fine-tune's base model gives: the base's repository and commit, or the reason none."""
    base = entry.get("base_model")
    if entry["status"] != "ok":
        return {"repo": base, "status": "none: the repository itself cannot be studied"}
    if not base:
        return {"repo": None, "status": f"none: {entry.get('base_model_note') or 'no base model'}"}
    found = known.get(base)
    if found is None:
        return {"repo": base, "status": f"none: its base model {base} was not resolved"}
    if found["status"] != "ok":
        return {"repo": base, "status": f"none: its base model cannot be read ({found['status']})"}
    if found["stem"]["shape"] != entry["stem"]["shape"] or found["stem"]["module_type"] != entry["stem"]["module_type"]:
        return {"repo": base, "status": f"none: its base model's stem is {found['stem']['module_type']} "
                                        f"{found['stem']['shape']}, its own {entry['stem']['module_type']} "
                                        f"{entry['stem']['shape']}"}
    return {"repo": base, "commit": found["commit"], "status": "ok"}


# Reading an indexed stem ------------------------------------------------------------------------------------

def read_stem(entry: dict, base: dict | None = None, *, policy: RetryPolicy = RetryPolicy()) -> Stem:
    """The filters of an indexed repository's stem (its base model's as the init, where given).

    Raises StemError for a repository that cannot be studied; DownloadError when the Hub cannot be read.
    """
    if entry["status"] != "ok":
        raise StemError(entry["status"].removeprefix("skipped: "))
    weight, meta = _filters(entry, policy)
    init = None
    if base is not None:
        init = _base_filters(base, policy)
        if init.shape != weight.shape:
            raise StemError(f"{entry['repo']}: its base model {base['repo']}'s stem is {init.shape}, its own "
                            f"{weight.shape}")
    stem = entry["stem"]
    return Stem(weight=weight, init=init, stride=stem["stride"], first_conv=stem["key"].removesuffix(".weight"),
                meta=meta)


# A job reads the fine-tunes of a few base models: each base's stem is read once per job, not once per fine-tune.
_BASES: dict[tuple, np.ndarray] = {}
_BASES_KEPT = 64


def _base_filters(base: dict, policy: RetryPolicy) -> np.ndarray:
    key = (base["repo"], base["commit"], base["stem"]["file"], base["stem"]["key"])
    if key not in _BASES:
        if len(_BASES) >= _BASES_KEPT:
            _BASES.pop(next(iter(_BASES)))
        _BASES[key], _ = _filters(base, policy)
    return _BASES[key]


def _filters(entry: dict, policy: RetryPolicy) -> tuple[np.ndarray, dict]:
    from huggingface_hub.constants import is_offline_mode

    from .hf_hub import cached_hub_file, read_hub_file
    from .weight_standardisation import effective_filters

    stem, repo, commit = entry["stem"], entry["repo"], entry["commit"]
    keys = [stem["key"], *stem["extra_keys"]]
    where = f"hf://{repo}@{commit}/{stem['file']}"
    cached = cached_hub_file(repo, commit, stem["file"])
    if stem["format"] == "safetensors" and cached is None and not is_offline_mode():
        tensors, fetched = read_tensors(repo, commit, stem["file"], {key: stem["entries"][key] for key in keys},
                                        stem["data_start"], policy=policy)
        how = "range"
    else:
        if cached is None and is_offline_mode():
            raise DownloadError(f"{where}: HF_HUB_OFFLINE=1 and the file is not in the Hugging Face cache; run "
                                "`snakemake --cores 4 fetch_remote` where the Hub can be reached, then rerun here")
        path = cached[1] if cached else download_file(repo, commit, stem["file"])
        tensors, fetched, how = read_hub_file(path, keys, where), 0 if cached else stem["file_size"], \
            "cache" if cached else "full"
    named = {"stem.weight": tensors[stem["key"]]}
    if stem["extra_keys"]:
        named["stem.gain"] = tensors[stem["extra_keys"][0]]
    weight = effective_filters(named, {"module_type": stem["module_type"], "kernel_size": stem["kernel_size"],
                                       "in_chans": stem["in_chans"], "std_eps": stem["std_eps"],
                                       "std_scale": stem["std_scale"], "patch_layout": stem["patch_layout"]}, "stem")
    weight = validate_conv_weight(weight, where)
    return weight, {"file_size": stem["file_size"], "bytes_fetched": fetched, "fetch": how, "commit": commit,
                    "filename": stem["file"]}


def fetch_whole(entry: dict) -> dict:
    """fetch_remote for an indexed repository: its weights file, whole, into the Hugging Face cache."""
    if entry["status"] != "ok":
        return {"fetched": None, "why": entry["status"]}
    path = download_file(entry["repo"], entry["commit"], entry["stem"]["file"])
    return {"fetched": path, "bytes": entry["stem"]["file_size"]}


def index_json(index: dict) -> str:
    return json.dumps(index, indent=1, sort_keys=True)


__all__ = ["HubRequest", "RepoRequest", "RepositoryUnavailable", "resolve", "read_stem", "init_of", "fetch_whole"]
