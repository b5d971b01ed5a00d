"""Checkpoints in batches: one job reads and analyses a shard of a zoo's checkpoints.

A job pays for a fresh interpreter and its imports (seconds) while one
checkpoint's stem takes milliseconds, so the per-checkpoint work runs in
shards. A checkpoint's shard is a hash of its name, so a shard's members
change only when checkpoints are added, replaced or removed in it: adding one
checkpoint reruns one shard, not the zoo. A zoo has the smallest power of two
of shards that keeps them at most `shard_size` checkpoints on average; when a
zoo grows past such a size, its shards split (each into two) and run again once.

This module is imported at Snakemake start-up: it imports no torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import read_npz, write_npz
from .records import CheckpointSpec


def shard_count(n_checkpoints: int, shard_size: int) -> int:
    count = 1
    while count * shard_size < n_checkpoints:
        count *= 2
    return count


def shard_name(checkpoint_name: str, count: int) -> str:
    digest = hashlib.blake2b(checkpoint_name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return f"{int.from_bytes(digest, 'little') % count:04d}-of-{count:04d}"


def assign_shards(specs: Iterable[CheckpointSpec], shard_size: int) -> dict[str, list[CheckpointSpec]]:
    """One zoo's checkpoints by shard name, each shard in name order."""
    specs = sorted(specs, key=lambda spec: spec.name)
    count = shard_count(len(specs), shard_size)
    shards: dict[str, list[CheckpointSpec]] = {}
    for spec in specs:
        shards.setdefault(shard_name(spec.name, count), []).append(spec)
    return dict(sorted(shards.items()))


def save_analyses(path: str | Path, analyses: Sequence) -> None:
    """A shard's analyses in one .npz: each array name concatenated over the analyses, shapes in the header.

    One file a shard (not a file a checkpoint) keeps a zoo of 100,000 checkpoints
    at a few thousand files, read back with one open each.
    """
    headers, shapes, columns = [], [], {}
    for analysis in analyses:
        header, arrays = analysis.to_record()
        headers.append(header)
        shapes.append({name: list(array.shape) for name, array in arrays.items()})
        for name, array in arrays.items():
            columns.setdefault(name, []).append(np.asarray(array).ravel())
    arrays = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}
    write_npz(path, {"analyses": headers, "shapes": shapes}, **arrays)


def load_analyses(path: str | Path, skip: tuple[str, ...] = ()) -> list:
    """The analyses that save_analyses wrote, in order; arrays named in `skip` are left unread (None)."""
    from .analysis import CheckpointAnalysis

    content, flat = read_npz(path, skip)
    offsets = dict.fromkeys(flat, 0)
    analyses = []
    for header, shapes in zip(content["analyses"], content["shapes"]):
        arrays = {}
        for name, shape in shapes.items():
            if name in skip:
                continue
            size = int(np.prod(shape, dtype=np.int64))
            arrays[name] = flat[name][offsets[name]:offsets[name] + size].reshape(shape)
            offsets[name] += size
        unread = tuple(name for name in skip if name in shapes)
        analyses.append(CheckpointAnalysis.from_record(header, arrays, unread))
    return analyses
