"""Named tensors of a safetensors file on an HTTP server, read with Range requests: never the whole file.

A safetensors file is an 8-byte header length, a JSON header (name -> dtype,
shape, byte offsets) and the raw tensor bytes: a stem is a few kilobytes at a
known offset, so three or four HTTP Range requests fetch it from a file of
hundreds of megabytes. The header is parsed by checkpoint_io, as for a local
file; the timm source reads the Hub's model.safetensors this way (hf_hub.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checkpoint_io import parse_safetensors_header, safetensors_header_length
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


@dataclass
class RemoteHeader:
    header: dict[str, dict]  # name -> dtype, shape, data_offsets (relative to data_start)
    metadata: dict[str, str]
    data_start: int  # where the tensors' bytes begin in the file: 8 + the header's length
    file_size: int | None
    bytes_fetched: int


def read_remote_header(url: str, *, headers: dict[str, str] | None = None,
                       policy: RetryPolicy = RetryPolicy(), first_read: int = FIRST_READ) -> RemoteHeader:
    """The header of a remote safetensors file, in one Range request (two when it is longer than `first_read`)."""
    first, total = read_range(url, 0, first_read, headers=headers, policy=policy)
    fetched = len(first)
    header_len = safetensors_header_length(first, total, url)
    if 8 + header_len > len(first):
        rest, _ = read_range(url, len(first), 8 + header_len, headers=headers, policy=policy)
        fetched += len(rest)
        first += rest
    header, metadata = parse_safetensors_header(first[8:8 + header_len], url)
    return RemoteHeader(header, metadata, 8 + header_len, total, fetched)


def read_remote_tensor(url: str, entry: dict, data_start: int, name: str, *, headers: dict[str, str] | None = None,
                       policy: RetryPolicy = RetryPolicy()) -> tuple[np.ndarray, int]:
    """One tensor of a remote safetensors file whose header entry is known: one Range request; (array, bytes)."""
    start, end = entry["data_offsets"]
    raw, _ = read_range(url, data_start + start, data_start + end, headers=headers, policy=policy)
    if len(raw) != end - start:
        raise StemError(f"{url}: tensor {name!r} is cut short ({len(raw)} of {end - start} bytes); the file is "
                        "truncated or not the one the index pinned")
    return _decode(raw, entry["dtype"], entry["shape"], name, url), len(raw)


def read_remote_safetensors(url: str, keys: list[str], *, headers: dict[str, str] | None = None,
                            policy: RetryPolicy = RetryPolicy(), optional: tuple[str, ...] = ()) -> RemoteTensors:
    """Read `keys` (and those of `optional` present) from a remote safetensors file with Range requests."""
    remote = read_remote_header(url, headers=headers, policy=policy)
    header, fetched = remote.header, remote.bytes_fetched
    missing = [key for key in keys if key not in header]
    if missing:
        stems = sorted(name for name in header if name.endswith(".weight"))[:5]
        raise StemError(f"{url}: no tensor named {missing[0]!r} (the file's first weights: {stems})")
    tensors = {}
    for key in [*keys, *(key for key in optional if key in header)]:
        tensors[key], size = read_remote_tensor(url, header[key], remote.data_start, key, headers=headers,
                                                policy=policy)
        fetched += size
    return RemoteTensors(tensors, remote.file_size, fetched, remote.metadata)
