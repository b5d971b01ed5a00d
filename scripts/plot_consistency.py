"""Rule plot_consistency: one clustered heatmap per basis, of checkpoints or, in a large basis, of groups."""

from firstlayer_zoo.plots import plot_consistency
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    plot_consistency(read_table(snakemake.input.checkpoints), read_table(snakemake.input.consistency),
                     read_table(snakemake.input.groups), snakemake.wildcards.basis, snakemake.output[0],
                     snakemake.params.max_checkpoints)
