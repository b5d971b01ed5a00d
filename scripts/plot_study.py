"""Rule plot_study: the study-wide figures, drawn from its tables."""

from firstlayer_zoo.paper_comparison import plot_paper_comparison
from firstlayer_zoo.plots import (
    plot_autocorrelation,
    plot_colour,
    plot_fit_examples,
    plot_fit_quality,
    plot_profiles,
    plot_training_time,
    plot_whitening,
)
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    tables = {name: read_table(path) for name, path in snakemake.input.items()}
    checkpoints, fits, out = tables["checkpoints"], tables["fits"], snakemake.output
    plot_profiles(checkpoints, tables["profiles"], out.profiles)
    plot_fit_examples(checkpoints, tables["profiles"], fits, snakemake.params.examples, out.fits)
    plot_fit_quality(checkpoints, fits, out.fit_quality)
    plot_training_time(checkpoints, fits, out.training_time)
    plot_whitening(checkpoints, fits, out.whitening)
    plot_autocorrelation(checkpoints, tables["autocorrelation"], out.autocorrelation)
    plot_colour(checkpoints, fits, out.colour)
    plot_paper_comparison(tables["paper_comparison"], out.paper_comparison)
