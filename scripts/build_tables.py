"""Rule build_tables: the study's Parquet tables from every checkpoint's analysis, and its summary per zoo."""

from firstlayer_zoo.analysis import FILTER_ARRAYS
from firstlayer_zoo.atomic import write_text
from firstlayer_zoo.consistency import ConsistencyLimits
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.shards import load_analyses
from firstlayer_zoo.summary import require_analysable, study_summary
from firstlayer_zoo.tables import build_tables, write_table

with logged(snakemake):
    analyses = [analysis for path in snakemake.input for analysis in load_analyses(path, skip=FILTER_ARRAYS)]
    tables = build_tables(analyses, ConsistencyLimits(**snakemake.params.limits))
    summary = study_summary(tables["checkpoints"], snakemake.output.checkpoints, snakemake.params.logs)
    print(summary)
    require_analysable(tables["checkpoints"], summary)
    for name, frame in tables.items():
        write_table(frame, name, snakemake.output[name])
        print(f"{name}: {len(frame)} rows")
    write_text(snakemake.output.summary, summary + "\n")
