"""Rule plot_profiles."""

from firstlayer_zoo.plots import plot_profiles
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    plot_profiles(read_table(snakemake.input.checkpoints), read_table(snakemake.input.profiles),
                  snakemake.output[0])
