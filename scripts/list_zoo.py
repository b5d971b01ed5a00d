"""Rule list_zoo (a Snakemake checkpoint): list the checkpoints of a zoo known only once a job has fetched them
(an archive's download and unpacking, a Hub listing), keeping the files they are read from."""

from firstlayer_zoo.limits import Limits, applied
from firstlayer_zoo.paths import StudyPaths
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.zoo_sources import ZOO_SOURCES
from firstlayer_zoo.zoo_sources.base import GeometryCache

with logged(snakemake), applied(Limits.from_dict(snakemake.params.limits)):
    options, outdir = snakemake.params.options, snakemake.params.outdir
    # The planner's stem geometry, read but never written here: the planner owns that file.
    cache = GeometryCache(StudyPaths(outdir).geometry_cache)
    source = ZOO_SOURCES[options["source"]](snakemake.wildcards.zoo, options, outdir, cache)
    entries = source.list_checkpoints()
    source.listed_files.mkdir(parents=True, exist_ok=True)  # the job's folder, even where it keeps nothing
    source.write_listing(entries)
    print(f"{len(entries)} checkpoints listed")
