"""Rule paper_comparison: the paper's reported numbers beside the study's, as a table and a figure."""

from firstlayer_zoo.paper_comparison import (
    paper_comparison,
    paper_datasets,
    plot_paper_comparison,
    read_paper_values,
)
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import read_table, write_table

with logged(snakemake):
    paper_values = read_paper_values(snakemake.input.paper_values)
    table = paper_comparison(read_table(snakemake.input.checkpoints), read_table(snakemake.input.profiles),
                             read_table(snakemake.input.fits), paper_values,
                             paper_datasets(snakemake.params.datasets, paper_values))
    write_table(table, "paper_comparison", snakemake.output.table)
    plot_paper_comparison(table, snakemake.output.plot)
    print(f"paper_comparison: {len(table)} rows")
