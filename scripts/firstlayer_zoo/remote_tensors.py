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


def read_remote_safetensors(url: str, keys: list[str], *, headers: dict[str, str] | None = None,
                            policy: RetryPolicy = RetryPolicy(), optional: tuple[str, ...] = ()) -> RemoteTensors:
    """Read `keys` (and those of `optional` present) from a remote safetensors file with Range requests."""
    first, total = read_range(url, 0, FIRST_READ, headers=headers, policy=policy)
    fetched = len(first)
    header_len = safetensors_header_length(first, total, url)
    if 8 + header_len > len(first):
        rest, _ = read_range(url, len(first), 8 + header_len, headers=headers, policy=policy)
        fetched += len(rest)
        first += rest
    header, metadata = parse_safetensors_header(first[8:8 + header_len], url)
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
