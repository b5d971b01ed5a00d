"""Rule plot_study: the study-wide figures, drawn from its tables."""

from firstlayer_zoo.plots import plot_study
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    tables = {name: read_table(path) for name, path in snakemake.input.items()}
    plot_study(tables, dict(snakemake.output.items()), snakemake.params.examples)
