"""The Hugging Face Hub's listing, model info and files, as a Hub zoo's resolution and stem reads need them.

huggingface_hub gives the endpoint's conventions, the headers (user agent, HF_TOKEN), offline mode and the
cache; every request this module makes goes through downloads.py, so it shares that module's discipline: 429
and 5xx answers retried with backoff (as long as a Retry-After asks, if longer), a connection that cannot be
made at all reported once as a NetworkError with the ways out, the token kept off a redirect to another host
(the Hub's CDN), every size bounded by `limits` (a JSON answer or config file by safetensors_header_mb, as a
header is), and an overall deadline of limits.download_minutes per request.

A refusal that belongs to one repository (401/403: private or gated; 404: no such repository, revision or
file) is a RepositoryUnavailable naming the fix: resolution writes it as that repository's `skipped:` reason.
A refusal of the listing itself, or no network, fails the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .downloads import ClientDownloadError, DownloadError, NetworkError, RetryPolicy, fetch_bytes
from .hf_hub import HUB_WAYS_OUT
from .hf_table import LayoutError
from .limits import LimitExceeded, current as current_limits
from .remote_tensors import RemoteHeader, read_remote_header, read_remote_tensor

DEFAULT_ENDPOINT = "https://huggingface.co"
# What the listing and model info are asked for: enough to pin and plan a repository without another request.
INFO_FIELDS = ("sha", "cardData", "siblings", "gated", "pipeline_tag", "library_name", "tags", "downloads",
               "likes", "lastModified", "createdAt")
# The listing's sort keys (the Hub sorts them in descending order).
SORTS = ("downloads", "likes", "lastModified", "createdAt", "trendingScore")
PAGE = 1000  # the most the Hub returns in one page of the listing


class RepositoryUnavailable(LayoutError):
    """One repository the Hub refuses or lacks (or one of its files): a skipped reason, never a failed job."""


@dataclass(frozen=True)
class HubSearch:
    """The Hub's own listing filters, as /api/models takes them."""

    author: str | None = None
    library: str | None = None  # transformers, open_clip, timm, ... (a tag of the repository)
    pipeline_tag: str | None = None  # image-classification, zero-shot-image-classification, ...
    tags: tuple[str, ...] = ()
    search: str | None = None  # a substring of the repository id
    sort: str | None = "downloads"
    limit: int | None = None  # None: every repository that matches

    def __post_init__(self) -> None:
        if self.sort is not None and self.sort not in SORTS:
            raise ValueError(f"search.sort {self.sort!r} is not one of {list(SORTS)}")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise ValueError(f"search.limit {self.limit!r} is not a positive number of repositories")

    @classmethod
    def from_dict(cls, values: dict) -> "HubSearch":
        values = dict(values)
        values["tags"] = tuple(values.get("tags") or ())
        return cls(**values)

    def to_dict(self) -> dict:
        return {"author": self.author, "library": self.library, "pipeline_tag": self.pipeline_tag,
                "tags": list(self.tags), "search": self.search, "sort": self.sort, "limit": self.limit}

    def params(self) -> list[tuple[str, str]]:
        params = [("filter", tag) for tag in ([self.library] if self.library else []) + list(self.tags)]
        for key in ("author", "pipeline_tag", "search", "sort"):
            if getattr(self, key):
                params.append((key, getattr(self, key)))
        if self.sort:
            params.append(("direction", "-1"))
        params.append(("limit", str(min(PAGE, self.limit or PAGE))))
        params.extend(("expand", name) for name in INFO_FIELDS)
        return params


@dataclass
class Fetched:
    """Bytes fetched by one resolution (or read), by what they were for."""

    api: int = 0
    files: int = 0
    by_file: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.api + self.files


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers()


def refuse_offline(what: str) -> None:
    from huggingface_hub.constants import is_offline_mode

    if is_offline_mode():
        raise DownloadError(f"HF_HUB_OFFLINE=1, and {what} needs the Hub: run this zoo's resolution where the Hub can "
                            "be reached (`snakemake --cores 4 fetch_remote` resolves and fetches every remote input), "
                            "then rerun here")


def as_hub_error(error: Exception, repo_id: str | None, what: str) -> Exception:
    """Network failures with the Hub's ways out; a repository's 401/403/404 and sizes past limits as
    RepositoryUnavailable (with no repository, the listing's, they stay errors that fail the job)."""
    if isinstance(error, NetworkError):
        return NetworkError(error.endpoint, error.reason, HUB_WAYS_OUT)
    if isinstance(error, LimitExceeded):
        return RepositoryUnavailable(str(error)) if repo_id else DownloadError(str(error))
    if isinstance(error, ClientDownloadError) and repo_id is not None:
        page = f"{endpoint()}/{repo_id}"
        reason = {
            401: f"the Hub refuses {what} without a token: a private or gated repository, or none of that name; "
                 "check the name, or set HF_TOKEN to a token that may read it",
            403: f"the Hub refuses {what}: a gated repository whose terms the token's account has not accepted; "
                 f"accept them at {page} and set HF_TOKEN to that account's token, or leave it out (exclude)",
            404: f"the Hub has no {what}; check the repository id and revision",
        }.get(error.status, f"the Hub answers HTTP {error.status} for {what}")
        return RepositoryUnavailable(f"{repo_id}: {reason}")
    return error


@contextlib.contextmanager
def hub_errors(repo_id: str | None, what: str) -> Iterator[None]:
    try:
        yield
    except (NetworkError, ClientDownloadError, LimitExceeded) as error:
        mapped = as_hub_error(error, repo_id, what)
        if mapped is error:
            raise
        raise mapped from None


def _json(body: bytes, where: str):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise LayoutError(f"{where}: not JSON (a corrupt or hostile answer)") from None


def _json_limit() -> int:
    return current_limits().header_bytes


def list_models(search: HubSearch, *, policy: RetryPolicy = RetryPolicy(),
                fetched: Fetched | None = None) -> Iterator[dict]:
    """The repositories the Hub lists for `search`, page after page (Link: rel="next"), up to its limit."""
    refuse_offline("listing a search")
    url = f"{endpoint()}/api/models?{urllib.parse.urlencode(search.params())}"
    given = 0
    while url:
        with hub_errors(None, "the listing"):
            body, headers = fetch_bytes(url, current_limits().download_bytes, "download_gb", headers=hub_headers(),
                                        policy=policy)
        if fetched is not None:
            fetched.api += len(body)
        page = _json(body, url)
        if not isinstance(page, list):
            raise DownloadError(f"{url}: the listing is not a JSON list; check HF_ENDPOINT")
        for item in page:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                yield item
                given += 1
                if search.limit is not None and given >= search.limit:
                    return
        url = next_page(headers.get("Link"))


def next_page(link: str | None) -> str | None:
    """The rel="next" URL of a Link header (GitHub's pagination, which the Hub uses)."""
    for part in (link or "").split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") and target.strip().startswith("<"):
            return target.strip()[1:-1]
    return None


def model_info(repo_id: str, revision: str | None = None, *, policy: RetryPolicy = RetryPolicy(),
               fetched: Fetched | None = None) -> dict:
    """The Hub's model info of a repository (at a revision): sha, siblings, cardData, gated, tags, ..."""
    refuse_offline(f"the model info of {repo_id}")
    path = f"/api/models/{repo_id}" + (f"/revision/{urllib.parse.quote(revision, safe='')}" if revision else "")
    url = endpoint() + path + "?" + urllib.parse.urlencode([("expand", name) for name in INFO_FIELDS])
    what = f"repository {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    with hub_errors(repo_id, what):
        body, _ = fetch_bytes(url, _json_limit(), "safetensors_header_mb", headers=hub_headers(), policy=policy)
    if fetched is not None:
        fetched.api += len(body)
    info = _json(body, url)
    if not isinstance(info, dict) or not isinstance(info.get("sha"), str):
        raise RepositoryUnavailable(f"{repo_id}: the Hub's model info names no commit (sha); check HF_ENDPOINT")
    return info


def file_url(repo_id: str, revision: str, filename: str) -> str:
    return f"{endpoint()}/{repo_id}/resolve/{urllib.parse.quote(revision, safe='')}/{urllib.parse.quote(filename)}"


def read_json_file(repo_id: str, commit: str, filename: str, *, policy: RetryPolicy = RetryPolicy(),
                   fetched: Fetched | None = None) -> dict | None:
    """A repository's JSON file (config.json, preprocessor_config.json, ...) at a commit; None where it has none."""
    url = file_url(repo_id, commit, filename)
    try:
        body, _ = fetch_bytes(url, _json_limit(), "safetensors_header_mb", headers=hub_headers(), policy=policy)
    except ClientDownloadError as error:
        if error.status == 404:
            return None
        raise as_hub_error(error, repo_id, filename) from None
    except (NetworkError, LimitExceeded) as error:
        raise as_hub_error(error, repo_id, filename) from None
    if fetched is not None:
        fetched.files += len(body)
        fetched.by_file[f"{repo_id}/{filename}"] = fetched.by_file.get(f"{repo_id}/{filename}", 0) + len(body)
    value = _json(body, f"{repo_id}/{filename}")
    if not isinstance(value, dict):
        raise LayoutError(f"{repo_id}/{filename}: not a JSON object; set stem_key and preprocessing for it")
    return value


def read_header(repo_id: str, commit: str, filename: str, *, policy: RetryPolicy = RetryPolicy(),
                fetched: Fetched | None = None) -> RemoteHeader:
    """The safetensors header of one file of a repository, by Range requests (the token kept off the CDN)."""
    with hub_errors(repo_id, filename):
        remote = read_remote_header(file_url(repo_id, commit, filename), headers=hub_headers(), policy=policy)
    if fetched is not None:
        fetched.files += remote.bytes_fetched
        key = f"{repo_id}/{filename}"
        fetched.by_file[key] = fetched.by_file.get(key, 0) + remote.bytes_fetched
    return remote


def read_tensors(repo_id: str, commit: str, filename: str, entries: dict[str, dict], data_start: int, *,
                 policy: RetryPolicy = RetryPolicy()) -> tuple[dict[str, np.ndarray], int]:
    """Named tensors of a safetensors file whose header entries are known: one Range request each, nothing else."""
    url = file_url(repo_id, commit, filename)
    tensors, total = {}, 0
    with hub_errors(repo_id, filename):
        for name, entry in entries.items():
            tensors[name], size = read_remote_tensor(url, entry, data_start, name, headers=hub_headers(),
                                                     policy=policy)
            total += size
    return tensors, total


def download_file(repo_id: str, commit: str, filename: str) -> str:
    """A whole file of a repository into huggingface_hub's cache (for pickles, and fetch_remote); its path.

    Refused past limits.download_gb by the size the Hub announces, before any byte is downloaded.
    """
    from huggingface_hub import hf_hub_download

    from .hf_hub import hub_file_metadata

    with hub_errors(repo_id, filename):
        meta = hub_file_metadata(file_url(repo_id, commit, filename), endpoint())
        limit = current_limits().download_bytes
        if meta.size is not None and meta.size > limit:
            raise LimitExceeded(f"{repo_id}/{filename} is {meta.size:,} bytes, over the limit of {limit:,} "
                                "(limits.download_gb); raise limits.download_gb in the config if you trust it")
    try:
        return hf_hub_download(repo_id, filename, revision=commit, endpoint=endpoint())
    except Exception as error:  # noqa: BLE001 - huggingface_hub's own errors, told as ours
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403, 404):
            with hub_errors(repo_id, filename):
                raise ClientDownloadError(file_url(repo_id, commit, filename), status, "refused") from None
        raise
