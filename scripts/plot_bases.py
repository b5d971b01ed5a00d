"""Rule plot_bases: per basis, the clustered consistency heatmap and its filters as pictures."""

from pathlib import Path

from firstlayer_zoo.paths import basis_plot_in
from firstlayer_zoo.plots import plot_bases
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

# plot_bases' worker processes import this file again (as __mp_main__, where `snakemake` is undefined): only
# the job itself runs it.
if __name__ == "__main__":
    with logged(snakemake):
        params, out = snakemake.params, snakemake.output
        for folder in (out.consistency, out.filters):
            Path(folder).mkdir(parents=True, exist_ok=True)  # a study with no basis has empty folders
        counts = plot_bases(
            read_table(snakemake.input.checkpoints), read_table(snakemake.input.consistency),
            read_table(snakemake.input.groups), list(snakemake.input.analyses),
            dict(zip(params.slugs, zip(snakemake.input.bases, params.kernel_sizes))),
            {slug: (basis_plot_in(out.consistency, slug), basis_plot_in(out.filters, slug)) for slug in params.slugs},
            params.heatmap_checkpoints, params.filter_checkpoints, workers=snakemake.threads)
        for slug, (members, drawn) in counts.items():
            print(f"{slug}: {members} checkpoints, {drawn} drawn as filters")
