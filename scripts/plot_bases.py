"""Rule plot_bases: per basis, the clustered consistency heatmap and its filters as pictures."""

from firstlayer_zoo.plots import plot_bases
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    params, out = snakemake.params, snakemake.output
    counts = plot_bases(
        read_table(snakemake.input.checkpoints), read_table(snakemake.input.consistency),
        read_table(snakemake.input.groups), list(snakemake.input.analyses),
        dict(zip(params.slugs, zip(snakemake.input.bases, params.kernel_sizes))),
        dict(zip(params.slugs, zip(out.consistency, out.filters))),
        params.heatmap_checkpoints, params.filter_checkpoints)
    for slug, (members, drawn) in counts.items():
        print(f"{slug}: {members} checkpoints, {drawn} drawn as filters")
