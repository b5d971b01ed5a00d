"""Rule plot_fits: example fits and the distribution of fit quality."""

from firstlayer_zoo.plots import plot_fit_examples, plot_fit_quality
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    checkpoints = read_table(snakemake.input.checkpoints)
    fits = read_table(snakemake.input.fits)
    plot_fit_examples(checkpoints, read_table(snakemake.input.profiles), fits,
                      snakemake.params.examples, snakemake.output.examples)
    plot_fit_quality(checkpoints, fits, snakemake.output.quality)
