"""The study's tables: their columns are declared here, once, and checked on write."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .analysis import CheckpointAnalysis
from .atomic import atomic_path
from .profiles import consistency_matrix, pearson
from .records import CheckpointSpec

SCHEMAS: dict[str, pa.Schema] = {
    "checkpoints": pa.schema([
        ("checkpoint", pa.string()),
        ("zoo", pa.string()),
        ("source", pa.string()),
        ("arch", pa.string()),
        ("uri", pa.string()),
        ("first_conv", pa.string()),
        ("kernel_size", pa.int64()),
        ("in_chans", pa.int64()),
        ("out_channels", pa.int64()),
        ("stride", pa.int64()),
        ("dataset", pa.string()),
        ("preprocessing", pa.string()),
        ("basis", pa.string()),
        ("init_known", pa.bool_()),
        ("init_subtracted", pa.bool_()),
        ("step", pa.int64()),
        ("seed", pa.int64()),
        ("labels", pa.string()),
        ("run", pa.string()),
        ("status", pa.string()),
        ("dataset_tag", pa.string()),
        ("bytes_fetched", pa.int64()),
        ("file_size", pa.int64()),
        ("hyperparameters", pa.string()),
    ]),
    "profiles": pa.schema([
        ("checkpoint", pa.string()),
        ("component", pa.int64()),
        ("eigenvalue", pa.float64()),
        ("energy", pa.float64()),
        ("energy_init", pa.float64()),
        ("energy_luminance", pa.float64()),
        ("energy_opponent", pa.float64()),
    ]),
    "fits": pa.schema([
        ("checkpoint", pa.string()),
        ("tau", pa.float64()),
        ("tau_s1", pa.float64()),
        ("fit_r", pa.float64()),
        ("frac_whitened", pa.float64()),
        ("input_spread", pa.float64()),
        ("output_spread", pa.float64()),
        ("r_init", pa.float64()),
        ("autocorr_offset", pa.int64()),
        ("autocorr_data", pa.float64()),
        ("autocorr_init", pa.float64()),
        ("autocorr_trained", pa.float64()),
        ("colour_energy", pa.float64()),
        ("colour_energy_init", pa.float64()),
        ("colour_variance_data", pa.float64()),
    ]),
    "autocorrelation": pa.schema([
        ("checkpoint", pa.string()),
        ("offset", pa.int64()),
        ("data", pa.float64()),
        ("init", pa.float64()),
        ("trained", pa.float64()),
    ]),
    "consistency": pa.schema([
        ("basis", pa.string()),
        ("checkpoint_a", pa.string()),
        ("checkpoint_b", pa.string()),
        ("r", pa.float64()),
    ]),
    "consistency_summary": pa.schema([
        ("basis", pa.string()),
        ("relation", pa.string()),
        ("n_pairs", pa.int64()),
        ("median_r", pa.float64()),
        ("min_r", pa.float64()),
        ("max_r", pa.float64()),
    ]),
}
SUMMARY_GROUPS = ("arch", "labels", "seed", "step")
TRAINED_VS_INIT = "trained vs its own initialisation"


def checkpoints_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    rows = []
    for analysis in analyses:
        spec = CheckpointSpec.from_dict(analysis.spec)
        rows.append({
            "checkpoint": spec.id,
            "zoo": spec.zoo,
            "source": spec.source,
            "arch": spec.arch,
            "uri": spec.uri,
            "first_conv": spec.first_conv,
            "kernel_size": spec.kernel_size or None,
            "in_chans": spec.in_chans or None,
            "out_channels": analysis.out_channels,
            "stride": analysis.stride,
            "dataset": spec.dataset,
            "preprocessing": spec.preprocessing.key,
            "basis": spec.basis.slug if spec.basis is not None else None,
            "init_known": analysis.init_known,
            "init_subtracted": analysis.init_subtracted,
            "step": spec.step,
            "seed": spec.seed,
            "labels": spec.labels,
            "run": spec.run,
            "status": analysis.status,
            "dataset_tag": spec.extra.get("dataset_tag"),
            "bytes_fetched": analysis.stem_meta.get("bytes_fetched"),
            "file_size": analysis.stem_meta.get("file_size"),
            "hyperparameters": spec.extra.get("hyperparameters"),
        })
    return _frame(rows, "checkpoints")


def profiles_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    frames = []
    for analysis in analyses:
        if not analysis.ok:
            continue
        count = analysis.energy.shape[0]
        missing = np.full(count, np.nan)
        image_space = analysis.image_space
        frames.append(pd.DataFrame({
            "checkpoint": analysis.spec["zoo"] + "/" + analysis.spec["name"],
            "component": np.arange(1, count + 1),
            "eigenvalue": analysis.eigenvalues,
            "energy": analysis.energy,
            "energy_init": analysis.energy_init if analysis.energy_init is not None else missing,
            "energy_luminance": _or(image_space and image_space.energy_luminance, missing),
            "energy_opponent": _or(image_space and image_space.energy_opponent, missing),
        }))
    if not frames:
        return _frame([], "profiles")
    return _frame(pd.concat(frames, ignore_index=True), "profiles")


def fits_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    rows = []
    for analysis in analyses:
        if not analysis.ok:
            continue
        rows.append({
            "checkpoint": analysis.spec["zoo"] + "/" + analysis.spec["name"],
            "tau": analysis.fit.tau,
            "tau_s1": analysis.fit.tau_s1,
            "fit_r": analysis.fit.fit_r,
            "frac_whitened": analysis.fit.frac_whitened,
            "input_spread": analysis.whitening.input_spread,
            "output_spread": analysis.whitening.output_spread,
            "r_init": pearson(analysis.energy, analysis.energy_init) if analysis.energy_init is not None else None,
            **_headline_image_space(analysis.image_space),
        })
    return _frame(rows, "fits")


def _or(values, missing):
    return values if values is not None else missing


def _headline_image_space(measured) -> dict:
    """fits.parquet's image-space columns: the autocorrelation at the largest offset measured, and colour."""
    if measured is None:
        return {}
    columns = {"colour_energy": measured.colour_energy, "colour_energy_init": measured.colour_energy_init,
               "colour_variance_data": measured.colour_variance_data}
    if len(measured.offsets):
        last = int(np.argmax(measured.offsets))
        init = measured.autocorrelation_init
        columns.update({"autocorr_offset": int(measured.offsets[last]),
                        "autocorr_data": measured.autocorrelation_data[last],
                        "autocorr_init": init[last] if init is not None else None,
                        "autocorr_trained": measured.autocorrelation_trained[last]})
    return columns


def autocorrelation_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    """Output-map autocorrelation at every measured offset: data, initialisation, trained stem."""
    frames = []
    for analysis in analyses:
        measured = analysis.image_space
        if not analysis.ok or measured is None or not len(measured.offsets):
            continue
        count = len(measured.offsets)
        frames.append(pd.DataFrame({
            "checkpoint": analysis.spec["zoo"] + "/" + analysis.spec["name"],
            "offset": measured.offsets.astype(np.int64),
            "data": measured.autocorrelation_data,
            "init": _or(measured.autocorrelation_init, np.full(count, np.nan)),
            "trained": measured.autocorrelation_trained,
        }))
    if not frames:
        return _frame([], "autocorrelation")
    return _frame(pd.concat(frames, ignore_index=True), "autocorrelation")


def consistency_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    """Pearson r of every unordered pair of ok checkpoints that share a basis."""
    by_basis: dict[str, list[CheckpointAnalysis]] = {}
    for analysis in analyses:
        if analysis.ok:
            basis = CheckpointSpec.from_dict(analysis.spec).basis.slug
            by_basis.setdefault(basis, []).append(analysis)
    frames = []
    for basis, members in sorted(by_basis.items()):
        if len(members) < 2:
            continue  # a basis with one checkpoint has no pair
        ids = np.array([m.spec["zoo"] + "/" + m.spec["name"] for m in members])
        matrix = consistency_matrix(np.stack([m.energy for m in members]))
        upper_a, upper_b = np.triu_indices(len(members), k=1)
        frames.append(pd.DataFrame({
            "basis": basis,
            "checkpoint_a": ids[upper_a],
            "checkpoint_b": ids[upper_b],
            "r": matrix[upper_a, upper_b],
        }))
    if not frames:
        return _frame([], "consistency")
    return _frame(pd.concat(frames, ignore_index=True), "consistency")


def consistency_summary_table(checkpoints: pd.DataFrame, consistency: pd.DataFrame,
                              fits: pd.DataFrame) -> pd.DataFrame:
    """Pair correlations summarised by how the two checkpoints differ, per basis.

    A relation names, for each of arch, labels, seed and step, whether the pair
    shares it ("same seed") or not ("other seed"); trained-vs-init rows come from
    each checkpoint's r against its own initialisation.
    """
    groups = [g for g in SUMMARY_GROUPS if checkpoints[g].notna().any()]
    # Millions of pairs at zoo scale: compare integer codes of each group's values, and code
    # each pair by which groups it shares, then look up one of 2^len(groups) relation names.
    # A missing value (code -1) is never "same".
    index = pd.Index(checkpoints["checkpoint"])
    row_a = index.get_indexer(consistency["checkpoint_a"])
    row_b = index.get_indexer(consistency["checkpoint_b"])
    code = np.zeros(len(consistency), dtype=np.int64)
    for bit, group in enumerate(groups):
        values = pd.factorize(checkpoints[group])[0]
        code |= ((values[row_a] == values[row_b]) & (values[row_a] >= 0)).astype(np.int64) << bit
    names = np.array([", ".join(("same " if shared >> i & 1 else "other ") + g for i, g in enumerate(groups))
                      for shared in range(1 << len(groups))], dtype=object)
    pairs = pd.DataFrame({"basis": consistency["basis"].to_numpy(), "relation": names[code],
                          "r": consistency["r"].to_numpy()})
    init = fits.dropna(subset=["r_init"]).merge(checkpoints[["checkpoint", "basis"]], on="checkpoint")
    pairs = pd.concat([pairs, pd.DataFrame({"basis": init["basis"], "relation": TRAINED_VS_INIT,
                                            "r": init["r_init"]})], ignore_index=True)
    if pairs.empty:
        return _frame([], "consistency_summary")
    summary = pairs.groupby(["basis", "relation"])["r"].agg(
        n_pairs="size", median_r="median", min_r="min", max_r="max").reset_index()
    return _frame(summary, "consistency_summary")


def _frame(rows, name: str) -> pd.DataFrame:
    schema = SCHEMAS[name]
    frame = pd.DataFrame(rows, columns=schema.names) if not isinstance(rows, pd.DataFrame) else rows
    return frame[schema.names]


def write_table(frame: pd.DataFrame, name: str, path: str | Path) -> None:
    table = pa.Table.from_pandas(frame, schema=SCHEMAS[name], preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def build_tables(analyses: list[CheckpointAnalysis]) -> dict[str, pd.DataFrame]:
    tables = {
        "checkpoints": checkpoints_table(analyses),
        "profiles": profiles_table(analyses),
        "fits": fits_table(analyses),
        "consistency": consistency_table(analyses),
        "autocorrelation": autocorrelation_table(analyses),
    }
    tables["consistency_summary"] = consistency_summary_table(
        tables["checkpoints"], tables["consistency"], tables["fits"])
    return tables
