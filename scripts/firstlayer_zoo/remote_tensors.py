"""Tensors read out of checkpoint files without taking the whole file, or without executing it.

A safetensors file is an 8-byte header length, a JSON header (name -> dtype,
shape, byte offsets) and the raw tensor bytes: a stem is a few kilobytes at a
known offset, so three or four HTTP Range requests fetch it from a file of
hundreds of megabytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .downloads import RetryPolicy, read_range
from .stems import StemError

FIRST_READ = 64 * 1024  # one request usually covers the length and the whole header
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
          "I64": np.int64, "I32": np.int32}


@dataclass
class RemoteTensors:
    tensors: dict[str, np.ndarray]
    file_size: int | None
    bytes_fetched: int
    metadata: dict[str, str] = field(default_factory=dict)


def _decode(raw: bytes, dtype: str, shape: list[int], name: str, url: str) -> np.ndarray:
    if dtype not in DTYPES:
        raise StemError(f"{url}: tensor {name!r} has dtype {dtype}, which this reader does not decode")
    array = np.frombuffer(raw, dtype=DTYPES[dtype])
    if dtype == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(shape).astype(np.float64)


def read_remote_safetensors(url: str, keys: list[str], *, headers: dict[str, str] | None = None,
                            policy: RetryPolicy = RetryPolicy(), optional: tuple[str, ...] = ()) -> RemoteTensors:
    """Read `keys` (and those of `optional` present) from a remote safetensors file with Range requests."""
    first, total = read_range(url, 0, FIRST_READ, headers=headers, policy=policy)
    fetched = len(first)
    if len(first) < 8:
        raise StemError(f"{url}: {len(first)} bytes is too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", first[:8])
    if total is not None and 8 + header_len > total:
        raise StemError(f"{url}: safetensors header of {header_len} bytes is longer than the file ({total})")
    if 8 + header_len > len(first):
        rest, _ = read_range(url, len(first), 8 + header_len, headers=headers, policy=policy)
        fetched += len(rest)
        first += rest
    try:
        header = json.loads(first[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StemError(f"{url}: not a safetensors file (its header is not JSON: {error})") from None
    metadata = header.pop("__metadata__", None) or {}
    missing = [key for key in keys if key not in header]
    if missing:
        stems = sorted(name for name in header if name.endswith(".weight"))[:5]
        raise StemError(f"{url}: no tensor named {missing[0]!r} (the file's first weights: {stems})")
    base = 8 + header_len
    tensors = {}
    for key in [*keys, *(key for key in optional if key in header)]:
        entry = header[key]
        start, end = entry["data_offsets"]
        raw, _ = read_range(url, base + start, base + end, headers=headers, policy=policy)
        fetched += len(raw)
        tensors[key] = _decode(raw, entry["dtype"], entry["shape"], key, url)
    return RemoteTensors(tensors, total, fetched, metadata)


def load_state_dict(path: str | Path) -> dict:
    """A pickled state dict, loaded without executing code from the file (weights_only)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a refused or broken pickle
        raise StemError(f"{path}: cannot be loaded safely ({type(error).__name__}: {str(error)[:200]}); "
                        "convert it to safetensors") from None
    for wrapper in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise StemError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state
