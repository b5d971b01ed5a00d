"""One checkpoint's analysis: its stem in its dataset's patch basis."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .basis import PatchBasis
from .profiles import (
    ProfileFit,
    Whitening,
    colour_split,
    colour_variance_fraction,
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
    """Measurements of the stem's output maps and colour, besides the profile (docs/measurements.md).

    autocorrelation_*: mean autocorrelation of the output maps at each offset (px)
    for the data itself (identity filters), the initialisation and the trained stem;
    energy_luminance/opponent: the profile split by colour (None for 1-channel stems).
    """

    offsets: np.ndarray
    autocorrelation_data: np.ndarray
    autocorrelation_trained: np.ndarray
    autocorrelation_init: np.ndarray | None = None
    energy_luminance: np.ndarray | None = None
    energy_opponent: np.ndarray | None = None
    colour_energy: float | None = None
    colour_energy_init: float | None = None
    colour_variance_data: float | None = None

    ARRAYS = ("offsets", "autocorrelation_data", "autocorrelation_trained", "autocorrelation_init",
              "energy_luminance", "energy_opponent")
    NUMBERS = ("colour_energy", "colour_energy_init", "colour_variance_data")


@dataclass
class CheckpointAnalysis:
    checkpoint: CheckpointSpec
    status: str
    out_channels: int | None
    stride: int | None
    init_known: bool
    init_subtracted: bool
    eigenvalues: np.ndarray
    energy: np.ndarray
    energy_init: np.ndarray | None
    fit: ProfileFit | None
    whitening: Whitening | None
    stem_meta: dict = field(default_factory=dict)  # provenance of the stem (e.g. bytes_fetched, file_size)
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

    def to_record(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON header, arrays): what shards.save_analyses stores for this checkpoint."""
        header = {
            "spec": self.checkpoint.to_dict(),
            "status": self.status,
            "out_channels": self.out_channels,
            "stride": self.stride,
            "init_known": self.init_known,
            "init_subtracted": self.init_subtracted,
            "fit": asdict(self.fit) if self.fit else None,
            "whitening": asdict(self.whitening) if self.whitening else None,
            "stem_meta": self.stem_meta,
            "image_space": ({name: getattr(self.image_space, name) for name in ImageSpace.NUMBERS}
                            if self.image_space else None),
        }
        arrays = {"eigenvalues": self.eigenvalues, "energy": self.energy}
        if self.energy_init is not None:
            arrays["energy_init"] = self.energy_init
        if self.image_space:
            arrays.update({f"image_space.{name}": getattr(self.image_space, name) for name in ImageSpace.ARRAYS
                           if getattr(self.image_space, name) is not None})
        for name in FILTER_ARRAYS:
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        return header, arrays

    @classmethod
    def from_record(cls, header: dict, arrays: dict[str, np.ndarray], unread: tuple[str, ...] = ()
                    ) -> "CheckpointAnalysis":
        return cls(
            checkpoint=CheckpointSpec.from_dict(header["spec"]),
            status=header["status"],
            out_channels=header["out_channels"],
            stride=header["stride"],
            init_known=header["init_known"],
            init_subtracted=header["init_subtracted"],
            eigenvalues=arrays["eigenvalues"],
            energy=arrays["energy"],
            energy_init=arrays.get("energy_init"),
            fit=ProfileFit(**header["fit"]) if header["fit"] else None,
            whitening=Whitening(**header["whitening"]) if header["whitening"] else None,
            stem_meta=header.get("stem_meta", {}),
            # Skipped checkpoints have no image-space measurements; readers may leave the filters out.
            image_space=(ImageSpace(**header["image_space"],
                                    **{name: arrays.get(f"image_space.{name}") for name in ImageSpace.ARRAYS})
                         if header.get("image_space") is not None else None),
            filters_kept=arrays.get("filters_kept"),
            init_filters_kept=arrays.get("init_filters_kept"),
            unread=unread,
        )


def skipped_analysis(spec: CheckpointSpec, status: str, stem: Stem | None = None) -> CheckpointAnalysis:
    empty = np.zeros(0)
    return CheckpointAnalysis(
        checkpoint=spec, status=status,
        out_channels=stem.out_channels if stem is not None and stem.weight.size else None,
        stride=stem.stride if stem is not None else None,
        init_known=bool(stem is not None and stem.init is not None), init_subtracted=False,
        eigenvalues=empty, energy=empty, energy_init=None, fit=None, whitening=None,
        stem_meta=stem.meta if stem is not None else {},
    )


def no_basis_reason(spec: CheckpointSpec, stem: Stem) -> str:
    """Why a readable stem was planned without a patch basis."""
    data_chans = spec.preprocessing.in_chans
    if stem.in_chans != data_chans:
        return (f"skipped: {spec.uri}: stem takes {stem.in_chans} input channel(s) per filter, the {spec.dataset} "
                f"preprocessing gives {data_chans}: a stem for {stem.in_chans}-channel images or a grouped conv; "
                "no patch basis fits")
    return (f"skipped: {spec.uri}: the stem's geometry could not be read when the study was planned; "
            "run snakemake again to plan its basis")


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
        fit=fit_analytic_profile(energy, basis.eigenvalues),
        whitening=whitening_spreads(energy, basis.eigenvalues),
        stem_meta=stem.meta,
        image_space=measure_image_space(stem, basis, filters, float(np.max(raw))),
        filters_kept=stem.weight[:FILTERS_KEPT].astype(np.float32),
        init_filters_kept=stem.init[:FILTERS_KEPT].astype(np.float32) if stem.init is not None else None,
    )


def measure_image_space(stem: Stem, basis: PatchBasis, profiled: np.ndarray, peak: float) -> ImageSpace:
    """Output-map autocorrelation (data, init, trained stem) and the colour split of the profiled filters.

    The autocorrelation is of the maps the stem really produces, so it uses the
    trained weights W (not W - W0); the colour split follows the profile (`profiled`, its raw peak `peak`).
    """
    covariance, cross = basis.covariance, basis.cross_covariances
    init = stem.init.reshape(stem.init.shape[0], -1) if stem.init is not None else None
    measured = ImageSpace(
        offsets=basis.offsets,
        autocorrelation_data=output_autocorrelation(np.eye(basis.dimension), covariance, cross),
        autocorrelation_trained=output_autocorrelation(stem.filters(subtract_init=False), covariance, cross),
        autocorrelation_init=output_autocorrelation(init, covariance, cross) if init is not None else None,
    )
    if stem.in_chans != 3:
        return measured
    split = colour_split(profiled, basis.eigenvectors, stem.kernel_size, peak)
    measured.energy_luminance = split.energy_luminance
    measured.energy_opponent = split.energy_opponent
    measured.colour_energy = split.colour_energy
    measured.colour_variance_data = colour_variance_fraction(covariance, stem.kernel_size)
    if init is not None:
        measured.colour_energy_init = colour_split(init, basis.eigenvectors, stem.kernel_size, 1.0).colour_energy
    return measured


def require_ok(spec: CheckpointSpec, status: str) -> None:
    """Under analysis.strict, a checkpoint that cannot be analysed fails its job instead of becoming a status row."""
    if status != "ok":
        raise StemError(f"analysis.strict: checkpoint {spec.id} ({spec.uri}) cannot be analysed: {status}")
