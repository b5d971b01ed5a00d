"""One checkpoint's analysis: its stem in its dataset's patch basis."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np

from .basis import PatchBasis
from .checkpoint_record import measure
from .profiles import (
    ColourSplit,
    ProfileFit,
    Whitening,
    colour_split,
    data_autocorrelation,
    energy_profile,
    fit_analytic_profile,
    normalise,
    output_autocorrelation,
    whitening_spreads,
)
from .records import CheckpointSpec
from .stems import Stem, StemError

# Filters kept per analysis for the filter pictures: one readable row, small at zoo scale.
FILTERS_KEPT = 16
# Where they are kept: what the tables never read.
FILTER_ARRAYS = ("filters_kept", "init_filters_kept")
# Stems whose largest weight lies outside this range are rescaled before their squares are summed: beyond it a sum
# of squares over thousands of weights under- or overflows float64.
ORDINARY_MAGNITUDE = (2.0**-100, 2.0**100)


@dataclass
class ImageSpace:
    """The curves of the stem's output maps and of its colour, besides the profile (docs/measurements.md).

    autocorrelation_*: mean autocorrelation of the output maps at each offset (px)
    for the data itself (identity filters), the initialisation and the trained stem;
    energy_luminance/opponent: the profile split by colour (None for 1-channel stems).
    The numbers fits.parquet reports from them are measures (checkpoint_record.FITS).
    """

    offsets: np.ndarray
    autocorrelation_data: np.ndarray
    autocorrelation_trained: np.ndarray
    autocorrelation_init: np.ndarray | None = None
    energy_luminance: np.ndarray | None = None
    energy_opponent: np.ndarray | None = None

    ARRAYS = ("offsets", "autocorrelation_data", "autocorrelation_trained", "autocorrelation_init",
              "energy_luminance", "energy_opponent")


@dataclass
class CheckpointAnalysis:
    """One checkpoint's record: what the tables copy (checkpoint_record), and shards.py stores, for each checkpoint."""

    checkpoint: CheckpointSpec
    status: str
    out_channels: int | None
    stride: int | None
    init_known: bool
    init_subtracted: bool
    eigenvalues: np.ndarray
    energy: np.ndarray
    energy_init: np.ndarray | None
    # Every measure of checkpoint_record.MEASURES by name (None where it does not apply); none when skipped.
    measures: dict = field(default_factory=dict)
    # What reading the stem found, in the fields its source declares (ZooSource.stem_fields): bytes_fetched, ...
    stem_meta: dict = field(default_factory=dict)
    image_space: ImageSpace | None = None
    # The first FILTERS_KEPT filters (float32), trained and initial, for the filter pictures.
    filters_kept: np.ndarray | None = None
    init_filters_kept: np.ndarray | None = None
    # Arrays the file holds that the reader chose not to read (shards.load_analyses' `skip`).
    unread: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def has_filters(self) -> bool:
        """Whether filters were kept for the pictures, read or left unread."""
        return self.filters_kept is not None or "filters_kept" in self.unread


@dataclass
class Profiled:
    """A stem profiled in its basis: what every measure (checkpoint_record.FITS) is a function of.

    What several measures share (the fit, the whitening spreads, the colour split) is computed once, on first use.
    """

    stem: Stem  # scale-free (scale_free), its init with it
    basis: PatchBasis
    filters: np.ndarray  # the profiled filters, one a row: W - W0 where the init is subtracted, else W
    peak: float  # the largest energy of the profile before it was normalised
    energy: np.ndarray  # the profile, normalised to max 1
    energy_init: np.ndarray | None  # the initialisation's, where known

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.basis.eigenvalues

    @property
    def init_filters(self) -> np.ndarray | None:
        """W0, one filter a row, where known."""
        return self.stem.init.reshape(self.stem.init.shape[0], -1) if self.stem.init is not None else None

    @functools.cached_property
    def fit(self) -> ProfileFit:
        return fit_analytic_profile(self.energy, self.eigenvalues)

    @functools.cached_property
    def whitening(self) -> Whitening:
        return whitening_spreads(self.energy, self.eigenvalues)

    @functools.cached_property
    def colour(self) -> ColourSplit | None:
        """The profiled bank split into luminance and opponent parts (3-channel stems only)."""
        if self.stem.in_chans != 3:
            return None
        return colour_split(self.filters, self.basis.eigenvectors, self.peak)

    @functools.cached_property
    def colour_init(self) -> ColourSplit | None:
        """The initialisation's colour split, where it is known (3-channel stems only)."""
        if self.stem.in_chans != 3 or self.init_filters is None:
            return None
        return colour_split(self.init_filters, self.basis.eigenvectors, 1.0)

    @functools.cached_property
    def image_space(self) -> ImageSpace:
        """Output-map autocorrelation (data, init, trained stem) and the profile's colour split.

        The autocorrelation is of the maps the stem really produces, so it uses the trained weights W (not W - W0).
        """
        covariance, cross = self.basis.covariance, self.basis.cross_covariances
        init = self.init_filters
        return ImageSpace(
            offsets=self.basis.offsets,
            autocorrelation_data=data_autocorrelation(covariance, cross),
            autocorrelation_trained=output_autocorrelation(self.stem.filters(subtract_init=False), covariance, cross),
            autocorrelation_init=output_autocorrelation(init, covariance, cross) if init is not None else None,
            energy_luminance=self.colour.energy_luminance if self.colour else None,
            energy_opponent=self.colour.energy_opponent if self.colour else None,
        )


def skipped_analysis(spec: CheckpointSpec, status: str, stem: Stem | None = None) -> CheckpointAnalysis:
    empty = np.zeros(0)
    return CheckpointAnalysis(
        checkpoint=spec, status=status,
        out_channels=stem.out_channels if stem is not None and stem.weight.size else None,
        stride=stem.stride if stem is not None else None,
        init_known=bool(stem is not None and stem.init is not None), init_subtracted=False,
        eigenvalues=empty, energy=empty, energy_init=None, stem_meta=stem.meta if stem is not None else {},
    )


def no_basis_reason(spec: CheckpointSpec, stem: Stem) -> str:
    """Why a readable stem was planned without a patch basis."""
    data_chans = spec.preprocessing.in_chans
    if stem.in_chans != data_chans:
        return (f"skipped: {spec.uri}: stem takes {stem.in_chans} input channel(s) per filter, the {spec.dataset} "
                f"preprocessing gives {data_chans}: a stem for {stem.in_chans}-channel images or a grouped conv; "
                "no patch basis fits")
    return (f"skipped: {spec.uri}: the stem's geometry was not known when the study was planned (unreadable "
            "then); run snakemake again to plan its basis")


def analyse_stem(spec: CheckpointSpec, stem: Stem, basis: PatchBasis | None,
                 subtract_init: bool) -> CheckpointAnalysis:
    """Energy profile, analytic fit and whitening of one stem in its basis (None: planned without one).

    Never raises for one stem's values: whatever they do to the analysis becomes its skipped status.
    """
    try:
        return _analyse(spec, stem, basis, subtract_init)
    except Exception as error:  # noqa: BLE001 - one checkpoint must never stop the study
        return skipped_analysis(
            spec, f"skipped: {spec.uri}: its stem could not be analysed ({type(error).__name__}); "
                  "check the file's weights", stem)


def scale_free(stem: Stem) -> Stem:
    """The stem (and its init, by the same factor) times a power of two that brings its largest weight near 1, where
    that weight lies outside ORDINARY_MAGNITUDE; an ordinary stem is returned as it is.

    Everything measured of a stem is scale-free (a normalised profile, correlations, fractions), and multiplying by
    a power of two is exact, so finite weights of 1e-200 or 1e200 are profiled as the filters they are rather than
    squared into zeros or infinities.
    """
    arrays = [stem.weight] + ([stem.init] if stem.init is not None else [])
    peak = max(float(np.max(np.abs(array), initial=0.0)) for array in arrays)
    if peak == 0 or ORDINARY_MAGNITUDE[0] <= peak <= ORDINARY_MAGNITUDE[1]:
        return stem
    exponent = int(np.frexp(peak)[1])
    return replace(stem, weight=np.ldexp(stem.weight, -exponent),
                   init=None if stem.init is None else np.ldexp(stem.init, -exponent))


def _analyse(spec: CheckpointSpec, stem: Stem, basis: PatchBasis | None, subtract_init: bool) -> CheckpointAnalysis:
    if stem.status != "ok":
        return skipped_analysis(spec, stem.status, stem)
    if basis is None:
        return skipped_analysis(spec, no_basis_reason(spec, stem), stem)
    stem = scale_free(stem)
    if (stem.in_chans, stem.kernel_size) != (basis.in_chans, basis.kernel_size):
        return skipped_analysis(
            spec,
            f"skipped: stem takes {stem.in_chans} channels with a {stem.kernel_size}x{stem.kernel_size} "
            f"kernel, the basis {basis.in_chans} channels with {basis.kernel_size}x{basis.kernel_size}",
            stem,
        )
    init_subtracted = subtract_init and stem.init is not None
    filters = stem.filters(subtract_init=init_subtracted)
    raw = energy_profile(filters, basis.eigenvectors)
    if not np.any(raw > 0):
        if init_subtracted:
            return skipped_analysis(spec, "skipped: the stem equals its initialisation (no training signal)", stem)
        return skipped_analysis(spec, f"skipped: {spec.uri}: the stem's weights are all zero (an untrained or "
                                      "pruned layer?)", stem)
    energy = normalise(raw)
    energy_init = None
    if stem.init is not None:
        energy_init = normalise(energy_profile(stem.init.reshape(stem.init.shape[0], -1), basis.eigenvectors))
    profiled = Profiled(stem, basis, filters, float(np.max(raw)), energy, energy_init)
    return CheckpointAnalysis(
        checkpoint=spec,
        status="ok",
        out_channels=stem.out_channels,
        stride=stem.stride,
        init_known=stem.init is not None,
        init_subtracted=init_subtracted,
        eigenvalues=basis.eigenvalues,
        energy=energy,
        energy_init=energy_init,
        measures=measure(profiled),
        stem_meta=stem.meta,
        image_space=profiled.image_space,
        filters_kept=stem.weight[:FILTERS_KEPT].astype(np.float32),
        init_filters_kept=stem.init[:FILTERS_KEPT].astype(np.float32) if stem.init is not None else None,
    )


def require_ok(spec: CheckpointSpec, status: str) -> None:
    """Under analysis.strict, a checkpoint that cannot be analysed fails its job instead of becoming a status row."""
    if status != "ok":
        raise StemError(f"analysis.strict: checkpoint {spec.id} ({spec.uri}) cannot be analysed: {status}")
