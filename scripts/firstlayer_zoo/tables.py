"""The study's tables, their columns declared once and checked on write: those of checkpoints and fits in
checkpoint_record (whose rows this module copies), the others here."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .analysis import CheckpointAnalysis
from .atomic import atomic_path
from .checkpoint_record import CHECKPOINTS, FITS, checkpoint_row, fits_row
from .consistency import (
    RELATION_GROUPS,
    all_pairs,
    checkpoint_means,
    group_labels,
    group_matrix,
    label_sums,
    metadata_codes,
    nearest_neighbours,
    relation_summary,
    standardised,
)
from .settings import ConsistencySettings

# Each column kind of checkpoint_record as Arrow stores it.
ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}

SCHEMAS: dict[str, pa.Schema] = {
    "checkpoints": pa.schema([(column.name, ARROW[column.kind]) for column in CHECKPOINTS]),
    "profiles": pa.schema([
        ("checkpoint", pa.string()),
        ("component", pa.int64()),
        ("eigenvalue", pa.float64()),
        ("energy", pa.float64()),
        ("energy_init", pa.float64()),
        ("energy_luminance", pa.float64()),
        ("energy_opponent", pa.float64()),
    ]),
    "fits": pa.schema([("checkpoint", pa.string()), *((column.name, ARROW[column.kind]) for column in FITS)]),
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
        ("rank", pa.int64()),
    ]),
    "consistency_summary": pa.schema([
        ("basis", pa.string()),
        ("relation", pa.string()),
        ("n_pairs", pa.int64()),
        ("mean_r", pa.float64()),
        ("median_r", pa.float64()),
        ("min_r", pa.float64()),
        ("max_r", pa.float64()),
        ("n_sampled", pa.int64()),
    ]),
    "paper_comparison": pa.schema([
        ("quantity", pa.string()),
        ("paper_setting", pa.string()),
        ("setting", pa.string()),
        ("paper_value", pa.float64()),
        ("paper_std", pa.float64()),
        ("measured", pa.float64()),
        ("measured_std", pa.float64()),
        ("n", pa.int64()),
    ]),
    "consistency_groups": pa.schema([
        ("basis", pa.string()),
        ("group_a", pa.string()),
        ("group_b", pa.string()),
        ("n_pairs", pa.int64()),
        ("mean_r", pa.float64()),
    ]),
}
TRAINED_VS_INIT = "trained vs its own initialisation"


def checkpoints_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    return schema_frame([checkpoint_row(analysis) for analysis in analyses], "checkpoints")


def profiles_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    ok = [analysis for analysis in analyses if analysis.ok]
    if not ok:
        return schema_frame([], "profiles")
    counts = np.array([analysis.energy.shape[0] for analysis in ok])
    return schema_frame(pd.DataFrame({
        "checkpoint": np.repeat(_ids(ok), counts),
        "component": np.concatenate([np.arange(1, count + 1) for count in counts]),
        "eigenvalue": np.concatenate([analysis.eigenvalues for analysis in ok]),
        "energy": np.concatenate([analysis.energy for analysis in ok]),
        "energy_init": _concatenate(ok, lambda analysis: analysis.energy_init),
        "energy_luminance": _concatenate(ok, lambda analysis: analysis.image_space and
                                         analysis.image_space.energy_luminance),
        "energy_opponent": _concatenate(ok, lambda analysis: analysis.image_space and
                                        analysis.image_space.energy_opponent),
    }), "profiles")


def _concatenate(analyses: list[CheckpointAnalysis], per_component) -> np.ndarray:
    """One per-component array of every analysis, end to end; NaN where an analysis has none."""
    return np.concatenate([_or(per_component(analysis), np.full(analysis.energy.shape[0], np.nan))
                           for analysis in analyses])


def _ids(analyses: list[CheckpointAnalysis]) -> np.ndarray:
    return np.array([analysis.checkpoint.id for analysis in analyses], dtype=object)


def fits_table(analyses: Iterable[CheckpointAnalysis], means: pd.DataFrame | None = None) -> pd.DataFrame:
    """The analysed checkpoints' measures, with their consistency `means` (consistency_tables' checkpoint_means:
    checkpoint, mean_r, mean_r_group) where given."""
    by_checkpoint = means.set_index("checkpoint").to_dict("index") if means is not None else {}
    return schema_frame([fits_row(analysis, by_checkpoint.get(analysis.checkpoint.id, {}))
                         for analysis in analyses if analysis.ok], "fits")


def _or(values, missing):
    return values if values is not None else missing


def autocorrelation_table(analyses: Iterable[CheckpointAnalysis]) -> pd.DataFrame:
    """Output-map autocorrelation at every measured offset: data, initialisation, trained stem."""
    frames = []
    for analysis in analyses:
        measured = analysis.image_space
        if not analysis.ok or measured is None or not len(measured.offsets):
            continue
        count = len(measured.offsets)
        frames.append(pd.DataFrame({
            "checkpoint": analysis.checkpoint.id,
            "offset": measured.offsets.astype(np.int64),
            "data": measured.autocorrelation_data,
            "init": _or(measured.autocorrelation_init, np.full(count, np.nan)),
            "trained": measured.autocorrelation_trained,
        }))
    if not frames:
        return schema_frame([], "autocorrelation")
    return schema_frame(pd.concat(frames, ignore_index=True), "autocorrelation")


def profiles_by_basis(analyses: Iterable[CheckpointAnalysis]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{basis: (checkpoint ids, energy profiles as rows)} of the ok checkpoints."""
    by_basis: dict[str, list[CheckpointAnalysis]] = {}
    for analysis in analyses:
        if analysis.ok:
            by_basis.setdefault(analysis.checkpoint.basis.slug, []).append(analysis)
    return {basis: (_ids(members), np.stack([member.energy for member in members]))
            for basis, members in sorted(by_basis.items())}


def consistency_tables(profiles: dict[str, tuple[np.ndarray, np.ndarray]], checkpoints: pd.DataFrame,
                       init_correlations: pd.DataFrame, settings: ConsistencySettings) -> dict[str, pd.DataFrame]:
    """Pair correlations within each basis (`profiles_by_basis`): pairs, relation summary and group matrix.

    `consistency` holds every pair while a basis has at most `settings.max_pairs`
    of them, otherwise each checkpoint's `settings.neighbours` nearest neighbours
    (`rank` 1, 2, ...; none by default: the search costs a pass over every pair).
    A relation names, for each of arch, labels, seed, step and base model, whether the pair
    shares it ("same seed") or not ("other seed", also when either value is
    unknown); its mean r is exact at any size, its median, min and max come
    from all pairs or from `n_sampled` of them. Trained-vs-init rows come from
    each checkpoint's r against its own initialisation (`init_correlations`: checkpoint, r_init).
    """
    metadata = checkpoints.set_index("checkpoint")
    groups = tuple(group for group in RELATION_GROUPS if group in checkpoints and checkpoints[group].notna().any())
    pairs, summary, matrices, means = [], [], [], []
    for basis, (all_ids, energies) in profiles.items():
        z, valid = standardised(energies)
        ids = all_ids[valid]
        z = z[valid]
        rows = metadata.loc[ids]
        codes = metadata_codes(rows, groups)
        every_pair = None
        if len(ids) * (len(ids) - 1) // 2 <= settings.max_pairs:
            every_pair = all_pairs(z)
            rows_a, rows_b, r = every_pair
            rank = None
        else:
            rows_a, rows_b, r = nearest_neighbours(z, settings.neighbours)
            rank = np.tile(np.arange(1, len(rows_a) // max(len(ids), 1) + 1), len(ids)) if len(rows_a) else None
        pairs.append(pd.DataFrame({"basis": basis, "checkpoint_a": ids[rows_a], "checkpoint_b": ids[rows_b],
                                   "r": r, "rank": rank}))
        grouped = label_sums(z, group_labels(rows, settings))
        mean_all, mean_group = checkpoint_means(z, grouped)
        means.append(pd.DataFrame({"checkpoint": ids, "mean_r": mean_all, "mean_r_group": mean_group}))
        if len(ids) > 1:
            summary += [{"basis": basis, **row} for row in relation_summary(z, codes, groups, settings, every_pair)]
            matrices.append(group_matrix(grouped).assign(basis=basis))
        known = init_correlations["checkpoint"].isin(all_ids)
        init = init_correlations.loc[known, "r_init"].dropna().to_numpy()
        if init.size:
            summary.append({"basis": basis, "relation": TRAINED_VS_INIT, "n_pairs": init.size,
                            "mean_r": init.mean(), "median_r": np.median(init), "min_r": init.min(),
                            "max_r": init.max(), "n_sampled": init.size})
    return {
        "consistency": schema_frame(pd.concat(pairs, ignore_index=True) if pairs else [], "consistency"),
        "consistency_summary": schema_frame(summary, "consistency_summary"),
        "consistency_groups": schema_frame(pd.concat(matrices, ignore_index=True) if matrices else [],
                                     "consistency_groups"),
        "checkpoint_means": pd.concat(means, ignore_index=True) if means else
        pd.DataFrame(columns=["checkpoint", "mean_r", "mean_r_group"]),
    }


def schema_frame(rows, name: str) -> pd.DataFrame:
    """Rows (or a frame) with exactly the columns of table `name`, in SCHEMAS' order."""
    schema = SCHEMAS[name]
    frame = pd.DataFrame(rows, columns=schema.names) if not isinstance(rows, pd.DataFrame) else rows
    return frame[schema.names]


def write_table(frame: pd.DataFrame, name: str, path: str | Path) -> None:
    table = pa.Table.from_pandas(frame, schema=SCHEMAS[name], preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def build_tables(analyses: list[CheckpointAnalysis],
                 settings: ConsistencySettings = ConsistencySettings()) -> dict[str, pd.DataFrame]:
    checkpoints = checkpoints_table(analyses)
    init_correlations = pd.DataFrame([{"checkpoint": analysis.checkpoint.id, "r_init": analysis.measures["r_init"]}
                                      for analysis in analyses if analysis.ok], columns=["checkpoint", "r_init"])
    consistency = consistency_tables(profiles_by_basis(analyses), checkpoints, init_correlations, settings)
    return {
        "checkpoints": checkpoints,
        "profiles": profiles_table(analyses),
        # Each checkpoint's mean r with its basis and its group goes beside its measures.
        "fits": fits_table(analyses, consistency.pop("checkpoint_means")),
        "autocorrelation": autocorrelation_table(analyses),
        **consistency,
    }
