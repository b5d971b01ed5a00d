"""Rule build_tables: the study's Parquet tables from every checkpoint's analysis."""

from firstlayer_zoo.consistency import ConsistencyLimits
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.shards import load_analyses
from firstlayer_zoo.tables import build_tables, write_table

with logged(snakemake):
    analyses = [analysis for path in snakemake.input for analysis in load_analyses(path)]
    for name, frame in build_tables(analyses, ConsistencyLimits(**snakemake.params.limits)).items():
        write_table(frame, name, snakemake.output[name])
        print(f"{name}: {len(frame)} rows")
