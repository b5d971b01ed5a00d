"""Rule plot_colour."""

from firstlayer_zoo.plots import plot_colour
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    plot_colour(read_table(snakemake.input.checkpoints), read_table(snakemake.input.fits), snakemake.output[0])
