"""Tensors of a Hugging Face Hub repository's weights file, fetching as little as its format allows.

safetensors are read with Range requests (remote_tensors.py); a pickle is
downloaded whole into huggingface_hub's cache. Offline (HF_HUB_OFFLINE=1) the
cache is read.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint_io import load_torch_state_dict, read_tensor
from .downloads import FETCH_FIRST, DownloadError, NetworkError, RangeNotSupported, RetryPolicy, endpoint_of
from .remote_tensors import read_remote_safetensors
from .stems import StemError


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
