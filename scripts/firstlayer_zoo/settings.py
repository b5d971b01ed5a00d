"""The config's sections that tune the study's jobs (`analysis`, `consistency`, `plots`), typed.

plan.Study reads them once from the validated config; the rules hand the jobs what they need from the
Study, never from the raw config. Defaults match workflow/schemas/config.schema.yaml (tests/test_config.py
checks it). Imports nothing heavy: Snakemake start-up reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class Section:
    """A config section as a record: from its validated dict (absent keys take the defaults), and back."""

    @classmethod
    def from_dict(cls, values: dict | None):
        return cls(**(values or {}))

    def to_dict(self) -> dict:
        """What a rule hands its script (a plain dict, as Snakemake params are)."""
        return asdict(self)


@dataclass(frozen=True)
class AnalysisSettings(Section):
    """`analysis:` how each checkpoint is profiled, and how the patch statistics it is profiled in are computed."""

    subtract_init: bool = True
    strict: bool = False
    shard_size: int = 128
    moments: str = "centred"
    autocorrelation_offsets: list[int] = field(default_factory=lambda: [2, 5, 10])
    statistics_device: str = "auto"
    statistics_threads: int = 2

    @property
    def statistics_torch_device(self) -> str | None:
        """Where patch statistics run, as torch names it; None: a GPU when the machine has one."""
        return None if self.statistics_device == "auto" else self.statistics_device

    @property
    def statistics_gpus(self) -> int:
        """GPUs a patch_statistics job asks the scheduler for: one when the config asks for cuda."""
        return 1 if self.statistics_device == "cuda" else 0


@dataclass(frozen=True)
class ConsistencySettings(Section):
    """`consistency:` how profile correlations are tabulated at any zoo size (consistency.py)."""

    max_pairs: int = 2_000_000  # above this many pairs in a basis, pairs are sampled, not enumerated
    sample_pairs: int = 20_000  # pairs sampled per relation for its quantiles
    neighbours: int = 0  # nearest neighbours kept per checkpoint when pairs are not all kept (0: none)
    max_groups: int = 200  # rows of the group matrix per basis, before coarsening
    seed: int = 0


@dataclass(frozen=True)
class PlotSettings(Section):
    """`plots:` how much each figure shows."""

    fit_examples: int = 6
    heatmap_checkpoints: int = 300
    filter_checkpoints: int = 4

