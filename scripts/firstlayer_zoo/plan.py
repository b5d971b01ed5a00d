"""Turn a validated config into the study's checkpoints, runs and bases.

This runs at Snakemake start-up, so it imports no torch: stem geometry comes
from each zoo source's cheap metadata and is cached across invocations.
"""

from __future__ import annotations

from pathlib import Path

from .records import BasisKey, CheckpointSpec
from .zoos import ZOO_SOURCES, GeometryCache


# Config keys that once existed, with why they went: a config that still sets one is refused
# in one line rather than by the schema's generic "additional properties" message.
REMOVED_OPTIONS = {
    ("analysis", "decode"): (
        "GPU JPEG decoding silently corrupted the patch sums on an H200 "
        "(docs/benchmarks.md); images are always decoded with PIL on the CPU: delete the key"
    ),
}


def refuse_removed_options(config: dict) -> None:
    for (section, key), why in REMOVED_OPTIONS.items():
        if key in (config.get(section) or {}):
            raise ValueError(f"{section}.{key} was removed: {why}")


class Study:
    """Everything the DAG needs, resolved once from the config."""

    def __init__(self, config: dict, cache_path: str | Path | None = None):
        self.config = config
        self.outdir = config["outdir"]
        self.datasets: dict[str, dict] = config["datasets"]
        cache = GeometryCache(cache_path or Path(self.outdir) / ".plan" / "stem_geometry.json")
        self.checkpoints: dict[str, CheckpointSpec] = {}
        self.runs: dict[tuple[str, str], dict] = {}
        # Zoos whose checkpoints are known only after a download (a Snakemake checkpoint lists them).
        self.dynamic_zoos: dict[str, object] = {}
        self._indexed: dict[str, tuple[int, dict[str, CheckpointSpec]]] = {}
        for zoo_name, options in config["zoos"].items():
            if options["dataset"] not in self.datasets:
                raise ValueError(
                    f"zoos.{zoo_name}.dataset: {options['dataset']!r} is not a dataset in the config; "
                    f"choose one of {sorted(self.datasets)}"
                )
            source = ZOO_SOURCES[options["source"]](zoo_name, options, self.outdir, cache)
            if getattr(source, "dynamic", False):
                self.dynamic_zoos[zoo_name] = source
            for spec in source.checkpoints():
                if spec.id in self.checkpoints:
                    raise ValueError(f"checkpoint {spec.id} is listed twice in the config")
                self.checkpoints[spec.id] = spec
            for run_name, run in source.runs().items():
                self.runs[(zoo_name, run_name)] = run
        cache.save()
        planned = [*self.checkpoints.values(), *(zoo.planned_spec() for zoo in self.dynamic_zoos.values())]
        self.preprocessing = {spec.preprocessing.key: spec.preprocessing for spec in planned}
        self._bases = sorted({spec.basis for spec in planned if spec.basis is not None}, key=lambda key: key.slug)

    def indexed_checkpoints(self, zoo: str) -> dict[str, CheckpointSpec]:
        """A dynamic zoo's checkpoints by name, from the index its checkpoint rule wrote."""
        # Keyed by the index's mtime: a rerun of the checkpoint in the same invocation rewrites it.
        stamp = Path(self.dynamic_zoos[zoo].index_path).stat().st_mtime_ns
        if self._indexed.get(zoo, (None,))[0] != stamp:
            specs = {spec.name: spec for spec in self.dynamic_zoos[zoo].indexed_checkpoints()}
            self._indexed[zoo] = (stamp, specs)
        return self._indexed[zoo][1]

    def checkpoint(self, zoo: str, name: str) -> CheckpointSpec:
        if zoo in self.dynamic_zoos:
            return self.indexed_checkpoints(zoo)[name]
        return self.checkpoints[f"{zoo}/{name}"]

    @property
    def bases(self) -> list[BasisKey]:
        return self._bases
