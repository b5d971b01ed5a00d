"""Turn a validated config into the study's checkpoints, runs and bases.

This runs at Snakemake start-up, so it imports no torch: stem geometry comes
from each zoo source's cheap metadata and is cached across invocations.
"""

from __future__ import annotations

from pathlib import Path

from .records import BasisKey, CheckpointSpec
from .zoos import ZOO_SOURCES, GeometryCache


class Study:
    """Everything the DAG needs, resolved once from the config."""

    def __init__(self, config: dict, cache_path: str | Path | None = None):
        self.config = config
        self.outdir = config["outdir"]
        self.datasets: dict[str, dict] = config["datasets"]
        cache = GeometryCache(cache_path or Path(self.outdir) / ".plan" / "stem_geometry.json")
        self.checkpoints: dict[str, CheckpointSpec] = {}
        self.runs: dict[tuple[str, str], dict] = {}
        for zoo_name, options in config["zoos"].items():
            if options["dataset"] not in self.datasets:
                raise ValueError(
                    f"zoos.{zoo_name}.dataset: {options['dataset']!r} is not a dataset in the config; "
                    f"choose one of {sorted(self.datasets)}"
                )
            source = ZOO_SOURCES[options["source"]](zoo_name, options, self.outdir, cache)
            for spec in source.checkpoints():
                if spec.id in self.checkpoints:
                    raise ValueError(f"checkpoint {spec.id} is listed twice in the config")
                self.checkpoints[spec.id] = spec
            for run_name, run in source.runs().items():
                self.runs[(zoo_name, run_name)] = run
        cache.save()
        self.preprocessing = {spec.preprocessing.key: spec.preprocessing
                              for spec in self.checkpoints.values()}

    def checkpoint(self, zoo: str, name: str) -> CheckpointSpec:
        return self.checkpoints[f"{zoo}/{name}"]

    @property
    def bases(self) -> list[BasisKey]:
        return sorted({spec.basis for spec in self.checkpoints.values() if spec.basis is not None},
                      key=lambda key: key.slug)
