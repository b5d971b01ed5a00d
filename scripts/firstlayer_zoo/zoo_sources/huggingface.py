"""The `hf` source: any vision model on the Hugging Face Hub (transformers, OpenCLIP and timm formats),
named by repository or found by the Hub's own search, optionally with each fine-tune's base model as its init.

Which repositories there are, at which commit, where each stem is and how each was preprocessed are known only
from the Hub, so the source is listed by a job (rule list_zoo): the resolution (hf_resolve.resolve) writes the
pinned index (StudyPaths.hub_index) and one listing entry per repository. A rerun reads the listing
as it is; when the listing job runs again (the zoo's config changed, or `refresh: true` asks for it every run)
the index pins what did not change: without `refresh` the search is not listed again and no repository's commit
moves, with it the search is listed again and only new or changed repositories are resolved. The listing pins
each repository's commit (pinned_listing), so only the shards whose members changed run again.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from ..hf_resolve import INDEX_VERSION, HubRequest, fetch_whole, read_stem, resolve
from ..preprocessing import Preprocessing
from ..records import CheckpointSpec
from ..stems import Stem, StemError
from .base import ZooSource, register

# What an index entry holds that changes without the repository changing (the Hub's counters, this run's
# bookkeeping): left out of the spec, so that a new listing reruns no shard for them.
VOLATILE = ("downloads", "likes", "reused", "bytes_fetched", "unavailable")


def checkpoint_name(repo: str) -> str:
    """A repository id as a checkpoint name: owner--name (one folder name, as the Hugging Face cache spells it)."""
    return repo.replace("/", "--")


def pinned(entry: dict) -> str:
    """An index entry without its volatile fields, as sorted JSON: what the reader needs, stable across listings."""
    return json.dumps({key: value for key, value in entry.items() if key not in VOLATILE}, sort_keys=True)


@register
class HuggingFaceSource(ZooSource):
    source = "hf"
    remote = True
    listed_by_job = True  # the Hub's listing, each repository's commit, config files and safetensors header
    pinned_listing = True  # each entry pins its repository's commit
    spec_fields = {
        "repo": str, "commit": str,
        "layout": str,  # the hf_stems.csv row it was read by: a transformers model_type, open_clip:<tower>, timm
        "preprocessing_source": str,  # repository, or the config's override
        "preprocessing_approximate": str,  # how the eval preprocessing was approximated, where it was
        "hub_entry": str,  # its index entry (pinned), what the reader reads the stem by
        "hub_base_entry": str,  # its base model's, where that is its initialisation
        "base_model": str,  # provenance: the base model its card declares
        "init_note": str,  # provenance: its initialisation (base model@commit), or why none
    }
    stem_fields = {"file_size": int, "bytes_fetched": int, "filename": str, "commit": str, "fetch": str}

    @property
    def index_path(self) -> Path:
        return Path(self.paths.hub_index(self.name))

    @property
    def lists_every_run(self) -> bool:
        return bool(self.options.get("refresh"))

    @property
    def request(self) -> HubRequest:
        return HubRequest.from_options(self.options)

    def checkpoints(self) -> list[CheckpointSpec]:
        _ = self.request  # a search the Hub cannot take (sort, limit) is refused at start-up, not in the job
        return []

    def list_checkpoints(self, log=print) -> list[dict]:
        """Resolve the zoo's repositories into the pinned index; one listing entry per repository, in order."""
        previous = None
        if self.index_path.is_file():
            try:
                previous = json.loads(self.index_path.read_text())
            except ValueError:
                log(f"{self.index_path}: not JSON; resolving every repository again")
        refresh = bool(self.options.get("refresh"))
        index = resolve(self.request, previous, pinned=not refresh, workers=int(self.options.get("workers", 8)),
                        log=log)
        write_text(self.index_path, json.dumps(index, indent=1, sort_keys=True))
        known = {**index["bases"], **index["entries"]}
        entries = []
        for repo in index["order"]:
            entry = dict(index["entries"][repo])
            init = entry.get("init") or {}
            if init.get("status") == "ok":
                entry["base"] = known[init["repo"]]
            entries.append(entry)
        ok = sum(entry["status"] == "ok" for entry in entries)
        log(f"{len(entries)} repositories ({ok} ok, {len(index['excluded'])} excluded), {index['resolved']} resolved "
            f"now ({'listed again' if refresh or previous is None else 'the rest pinned by the index'}), "
            f"{index['bytes_fetched']:,} bytes fetched (index version {INDEX_VERSION})")
        return entries

    def listed_spec(self, entry: dict) -> CheckpointSpec:
        repo, ok = entry["repo"], entry["status"] == "ok"
        stem = entry.get("stem") or {}
        prep = entry.get("preprocessing")
        preprocessing = Preprocessing.from_dict(prep) if prep else self._fallback_preprocessing()
        init = entry.get("init") or {}
        base = entry.get("base") if self.options.get("init") == "base_model" else None
        commit = entry.get("commit")
        return CheckpointSpec(
            zoo=self.name, name=checkpoint_name(repo), source=self.source, arch=entry.get("layout"),
            locator=repo, label=f"hf://{repo}" + (f"@{commit}" if commit else ""),
            first_conv=stem["key"].removesuffix(".weight") if ok else "",
            kernel_size=stem["kernel_size"] if ok else 0, in_chans=stem["in_chans"] if ok else 0,
            stride=stem["stride"] if ok else None, dataset=self.options["dataset"], preprocessing=preprocessing,
            init_locator=f"hf://{base['repo']}@{base['commit']}" if base else None,
            channel_order=entry.get("channel_order") or "rgb",
            refused=None if ok else entry["status"].removeprefix("skipped: "),
            extra={
                "repo": repo, "commit": commit, "layout": entry.get("layout"),
                "preprocessing_source": entry.get("preprocessing_source"),
                "preprocessing_approximate": entry.get("approximate"),
                "hub_entry": pinned({key: value for key, value in entry.items() if key != "base"}) if ok else None,
                "hub_base_entry": pinned(base) if base else None,
                "base_model": entry.get("base_model"),
                "init_note": self._init_note(init, base),
            })

    def _fallback_preprocessing(self) -> Preprocessing:
        prep = self.options.get("preprocessing")
        return Preprocessing.from_dict(prep) if prep else Preprocessing()

    def _init_note(self, init: dict, base: dict | None) -> str | None:
        if self.options.get("init") != "base_model":
            return None
        if base:
            return f"base model {base['repo']}@{base['commit']}"
        return init.get("status") or "none: not resolved"

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        if spec.extra.get("hub_entry") is None:
            raise StemError(f"{spec.uri}: not resolved to a stem; see the zoo's listing")
        entry = json.loads(spec.extra["hub_entry"])
        base = json.loads(spec.extra["hub_base_entry"]) if spec.extra.get("hub_base_entry") else None
        return read_stem(entry, base)

    @classmethod
    def fetch(cls, spec: CheckpointSpec) -> dict:
        """The weights file of the repository (and of its base model), whole, into the Hugging Face cache."""
        if spec.extra.get("hub_entry") is None:
            return {"fetched": None, "why": "nothing to fetch: its stem cannot be analysed"}
        record = fetch_whole(json.loads(spec.extra["hub_entry"]))
        if spec.extra.get("hub_base_entry"):
            record["base"] = fetch_whole(json.loads(spec.extra["hub_base_entry"]))
        return record
