"""What one checkpoint carries into the tables, declared once: each column's name, type and where it comes from.

checkpoints.parquet (CHECKPOINTS): the spec's own fields and what its analysis found, then the provenance
columns (PROVENANCE), which a zoo source fills by writing a field of that name that it declares
(ZooSource.spec_fields at planning, stem_fields when reading; the column is empty where it writes none).
fits.parquet (FITS): one column per measure, a function of the stem profiled in its basis (analysis.Profiled)
computed once when the stem is analysed and stored with it (shards.py), and the consistency means of its
basis (consistency.py). tables.py copies these; it computes nothing per checkpoint.

A new per-checkpoint quantity is its function (profiles.py) and one Measure below; a new provenance column
is one Field below and the field its source writes (README's Outputs and docs/measurements.md aside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .profiles import at_largest_offset, colour_variance_fraction, pearson

# The record (analysis.CheckpointAnalysis) and the profiled stem (analysis.Profiled) are named in annotations only:
# analysis.py imports this module.


@dataclass(frozen=True)
class Field:
    """A column: its name and kind (str, int, float or bool; every column may be null)."""

    name: str
    kind: type


@dataclass(frozen=True)
class Column(Field):
    """A column copied from a checkpoint's record."""

    value: Callable[[CheckpointAnalysis], object]


@dataclass(frozen=True)
class Measure(Field):
    """A per-checkpoint quantity: computed from the profiled stem when it is analysed, copied into fits.parquet."""

    compute: Callable[[Profiled], object]


@dataclass(frozen=True)
class ConsistencyMean(Field):
    """A fits.parquet column that consistency.py computes over the checkpoint's basis, not from one checkpoint."""


# What a source may know of a checkpoint beyond its spec, for people: a source fills one by writing a field of
# its name (and kind) in a spec's `extra` or a stem's `meta`, declared in its spec_fields or stem_fields.
PROVENANCE = (
    Field("dataset_tag", str),  # the data the weights were trained on, as the source names it (timm: in21k>in1k)
    Field("bytes_fetched", int),  # what reading the stem downloaded ...
    Field("file_size", int),  # ... of how large a file
    Field("hyperparameters", str),  # a train run's training settings, or an archive run's flattened params (JSON)
    Field("width", float),  # a train run's channel multiplier
    Field("train_loss", float),  # over the training images under the run's labels, when the checkpoint was kept
    Field("train_accuracy", float),
    Field("test_accuracy", float),  # on the zoo's test_dataset, true labels
    Field("base_model", str),  # the model a fine-tune started from, as its Hub card declares it
    Field("init_note", str),  # where its initialisation comes from (a base model and its commit), or why none
)


def provenance(analysis: CheckpointAnalysis, name: str) -> object:
    """A provenance field as the checkpoint's source wrote it, at planning or when reading the stem."""
    return analysis.stem_meta.get(name, analysis.checkpoint.extra.get(name))


def _spec(name: str) -> Callable[[CheckpointAnalysis], object]:
    return lambda analysis: getattr(analysis.checkpoint, name)


def _analysis(name: str) -> Callable[[CheckpointAnalysis], object]:
    return lambda analysis: getattr(analysis, name)


CHECKPOINTS = (
    Column("checkpoint", str, lambda analysis: analysis.checkpoint.id),
    Column("zoo", str, _spec("zoo")),
    Column("source", str, _spec("source")),
    Column("arch", str, _spec("arch")),
    Column("uri", str, _spec("uri")),
    Column("first_conv", str, _spec("first_conv")),
    # 0: not read at planning.
    Column("kernel_size", int, lambda analysis: analysis.checkpoint.kernel_size or None),
    Column("in_chans", int, lambda analysis: analysis.checkpoint.in_chans or None),
    Column("out_channels", int, _analysis("out_channels")),
    Column("stride", int, _analysis("stride")),
    Column("dataset", str, _spec("dataset")),
    Column("preprocessing", str, lambda analysis: analysis.checkpoint.preprocessing.key),
    Column("basis", str, lambda analysis: analysis.checkpoint.basis and analysis.checkpoint.basis.slug),
    Column("init_known", bool, _analysis("init_known")),
    Column("init_subtracted", bool, _analysis("init_subtracted")),
    Column("step", int, _spec("step")),
    Column("seed", int, _spec("seed")),
    Column("labels", str, _spec("labels")),
    Column("run", str, _spec("run")),
    Column("status", str, _analysis("status")),
    *(Column(field.name, field.kind, lambda analysis, name=field.name: provenance(analysis, name))
      for field in PROVENANCE),
)


def _colour_variance(profiled: Profiled) -> float | None:
    return colour_variance_fraction(profiled.basis.covariance, profiled.stem.kernel_size) if profiled.colour else None


def _headline(curve: str) -> Callable[[Profiled], object]:
    """A measure: the autocorrelation curve `curve` at the largest offset measured (the paper's 10 px by default)."""
    return lambda profiled: at_largest_offset(profiled.image_space.offsets, getattr(profiled.image_space, curve))


FITS = (
    Measure("tau", float, lambda profiled: profiled.fit.tau),
    Measure("tau_s1", float, lambda profiled: profiled.fit.tau_s1),
    Measure("fit_r", float, lambda profiled: profiled.fit.fit_r),
    Measure("frac_whitened", float, lambda profiled: profiled.fit.frac_whitened),
    Measure("input_spread", float, lambda profiled: profiled.whitening.input_spread),
    Measure("output_spread", float, lambda profiled: profiled.whitening.output_spread),
    Measure("r_init", float, lambda profiled: pearson(profiled.energy, profiled.energy_init)
            if profiled.energy_init is not None else None),
    ConsistencyMean("mean_r", float),  # with every other analysed checkpoint of its basis
    ConsistencyMean("mean_r_group", float),  # with the others of its arch, labels and step: its other seeds
    Measure("autocorr_offset", int, _headline("offsets")),
    Measure("autocorr_data", float, _headline("autocorrelation_data")),
    Measure("autocorr_init", float, _headline("autocorrelation_init")),
    Measure("autocorr_trained", float, _headline("autocorrelation_trained")),
    Measure("colour_energy", float, lambda profiled: profiled.colour and profiled.colour.colour_energy),
    Measure("colour_energy_init", float,
            lambda profiled: profiled.colour_init and profiled.colour_init.colour_energy),
    Measure("colour_variance_data", float, _colour_variance),
)
MEASURES = tuple(column for column in FITS if isinstance(column, Measure))


def measure(profiled: Profiled) -> dict[str, int | float | None]:
    """Every measure of a profiled stem, by name, as plain numbers (None where it does not apply)."""
    values = {}
    for column in MEASURES:
        value = column.compute(profiled)
        values[column.name] = None if value is None else column.kind(value)
    return values


def checkpoint_row(analysis: CheckpointAnalysis) -> dict:
    """A checkpoint's row of checkpoints.parquet."""
    return {column.name: column.value(analysis) for column in CHECKPOINTS}


def fits_row(analysis: CheckpointAnalysis, means: dict[str, float]) -> dict:
    """An analysed checkpoint's row of fits.parquet: its measures, and its basis' consistency `means` of it."""
    return {"checkpoint": analysis.checkpoint.id,
            **{column.name: means.get(column.name) if isinstance(column, ConsistencyMean)
               else analysis.measures[column.name] for column in FITS}}
