"""Rule plot_autocorrelation."""

from firstlayer_zoo.plots import plot_autocorrelation
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    plot_autocorrelation(read_table(snakemake.input.checkpoints), read_table(snakemake.input.autocorrelation),
                         snakemake.output[0])
