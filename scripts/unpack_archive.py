"""Rule unpack_archive (a Snakemake checkpoint): download, verify and unpack a zoo archive, then index it."""

from firstlayer_zoo.zoo_sources.archive import ArchiveSource
from firstlayer_zoo.limits import Limits, applied
from firstlayer_zoo.rule_io import logged

with logged(snakemake), applied(Limits.from_dict(snakemake.params.limits)):
    source = ArchiveSource(snakemake.wildcards.zoo, snakemake.params.options, snakemake.params.outdir, cache=None)
    entries = source.fetch_and_index()
    source.write_index(entries)
    print(f"{len(entries)} checkpoints indexed")
