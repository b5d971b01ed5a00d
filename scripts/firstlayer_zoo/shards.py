"""Checkpoints in batches: one job reads and analyses a shard of a zoo's checkpoints.

A job pays for a fresh interpreter and its imports (seconds) while one
checkpoint's stem takes milliseconds, so the per-checkpoint work runs in
shards. A checkpoint's shard is a hash of its name, so a shard's members
change only when checkpoints are added, replaced or removed in it: adding one
checkpoint reruns one shard, not the zoo. A zoo has the smallest power of two
of shards that keeps them at most `shard_size` checkpoints on average; when a
zoo grows past such a size, its shards split (each into two) and run again once.

A shard's analyses are one .npz whose layout this module owns (save_analyses, load_analyses): per array name
(eigenvalues, energy, ...) the analyses' arrays end to end, and a JSON header with each one's spec, status,
measures, stem provenance and array shapes, and the layout's number (SHARD_LAYOUT); a file of another layout
is refused in one line saying to rerun it.

This module is imported at Snakemake start-up: it imports no torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import read_npz, write_npz
from .records import CheckpointSpec
from .rule_io import ClearError

# The layout of a shard's file (save_analyses): raise it when what the file holds changes. A shard of another
# layout is refused, saying to rerun it; the analyse_checkpoints rule has it as a param, so Snakemake reruns
# every shard when it changes.
SHARD_LAYOUT = 2


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
    """A shard's analyses in one .npz (layout SHARD_LAYOUT): each array name concatenated over the analyses, shapes
    and every other field in the JSON header.

    One file a shard (not a file a checkpoint) keeps a zoo of 100,000 checkpoints
    at a few thousand files, read back with one open each.
    """
    from .checkpoint_record import MEASURES

    headers, shapes, columns = [], [], {}
    for analysis in analyses:
        header, arrays = _record(analysis)
        headers.append(header)
        shapes.append({name: list(array.shape) for name, array in arrays.items()})
        for name, array in arrays.items():
            columns.setdefault(name, []).append(np.asarray(array).ravel())
    arrays = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}
    write_npz(path, {"layout": SHARD_LAYOUT, "measures": [measure.name for measure in MEASURES],
                     "analyses": headers, "shapes": shapes}, **arrays)


def load_analyses(path: str | Path, skip: tuple[str, ...] = ()) -> list:
    """The analyses that save_analyses wrote, in order; arrays named in `skip` are left unread (None).

    A shard of another layout, or written with other measures than the ones declared now, is refused in one
    line (ShardLayoutError) saying to rerun its job.
    """
    content, flat = read_npz(path, skip)
    _check_layout(path, content)
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
        analyses.append(_analysis(header, arrays, unread))
    return analyses


class ShardLayoutError(ClearError):
    """A shard file this version of the workflow does not read; the message says to rerun its job."""


RERUN = "rerun its job (snakemake --forcerun analyse_checkpoints, or delete the file)"


def _check_layout(path: str | Path, content: dict) -> None:
    from .checkpoint_record import MEASURES

    layout = content.get("layout", 1)  # the first layout had no number
    if layout != SHARD_LAYOUT:
        raise ShardLayoutError(f"{path}: a shard of layout {layout}, written by an older version of the workflow; "
                               f"this one reads layout {SHARD_LAYOUT}: {RERUN}")
    declared = [measure.name for measure in MEASURES]
    if content["measures"] != declared:
        missing = sorted(set(declared) - set(content["measures"])) or sorted(set(content["measures"]) - set(declared))
        raise ShardLayoutError(f"{path}: written with other measures than the workflow declares now "
                               f"({', '.join(missing)} differ): {RERUN}")


# What a shard's header holds of each analysis besides its spec and measures; its arrays are named in _arrays.
SCALARS = ("status", "out_channels", "stride", "init_known", "init_subtracted", "stem_meta")
OPTIONAL_ARRAYS = ("energy_init", "filters_kept", "init_filters_kept")


def _record(analysis) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, arrays) of one analysis."""
    from .analysis import ImageSpace

    header = {"spec": analysis.checkpoint.to_dict(), "measures": analysis.measures,
              "image_space": analysis.image_space is not None,
              **{name: getattr(analysis, name) for name in SCALARS}}
    arrays = {"eigenvalues": analysis.eigenvalues, "energy": analysis.energy}
    arrays.update({name: getattr(analysis, name) for name in OPTIONAL_ARRAYS if getattr(analysis, name) is not None})
    if analysis.image_space is not None:
        arrays.update({f"image_space.{name}": getattr(analysis.image_space, name) for name in ImageSpace.ARRAYS
                       if getattr(analysis.image_space, name) is not None})
    return header, arrays


def _analysis(header: dict, arrays: dict[str, np.ndarray], unread: tuple[str, ...] = ()):
    """The analysis that _record wrote: every header field is required; an array absent is None (as written, or
    left unread: `unread` names those the file holds)."""
    from .analysis import CheckpointAnalysis, ImageSpace

    image_space = None
    if header["image_space"]:
        image_space = ImageSpace(**{name: arrays.get(f"image_space.{name}") for name in ImageSpace.ARRAYS})
    return CheckpointAnalysis(
        checkpoint=CheckpointSpec.from_dict(header["spec"]),
        eigenvalues=arrays["eigenvalues"],
        energy=arrays["energy"],
        measures=header["measures"],
        image_space=image_space,
        **{name: header[name] for name in SCALARS},
        **{name: arrays.get(name) for name in OPTIONAL_ARRAYS},
        unread=unread,
    )
