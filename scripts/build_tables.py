"""Rule build_tables: the study's four Parquet tables from every checkpoint's analysis."""

from firstlayer_zoo.analysis import CheckpointAnalysis
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.tables import build_tables, write_table

with logged(snakemake):
    analyses = [CheckpointAnalysis.load(path) for path in snakemake.input]
    for name, frame in build_tables(analyses).items():
        write_table(frame, name, snakemake.output[name])
        print(f"{name}: {len(frame)} rows")
