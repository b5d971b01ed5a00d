"""Rule build_tables: the study's Parquet tables from every checkpoint's analysis (the paper's numbers beside
its own among them), and its summary per zoo."""

from firstlayer_zoo.analysis import FILTER_ARRAYS
from firstlayer_zoo.atomic import write_text
from firstlayer_zoo.settings import ConsistencySettings
from firstlayer_zoo.paper_comparison import paper_comparison, paper_datasets, read_paper_values
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.shards import load_analyses
from firstlayer_zoo.summary import require_analysable, study_summary
from firstlayer_zoo.tables import build_tables, write_table

with logged(snakemake):
    analyses = [analysis for path in snakemake.input.analyses for analysis in load_analyses(path, skip=FILTER_ARRAYS)]
    tables = build_tables(analyses, ConsistencySettings.from_dict(snakemake.params.consistency))
    paper_values = read_paper_values(snakemake.input.paper_values)
    tables["paper_comparison"] = paper_comparison(tables["checkpoints"], tables["profiles"], tables["fits"],
                                                  paper_values, paper_datasets(snakemake.params.datasets, paper_values))
    summary = study_summary(tables["checkpoints"], snakemake.output.checkpoints, snakemake.params.logs)
    print(summary)
    require_analysable(tables["checkpoints"], summary)
    for name, frame in tables.items():
        write_table(frame, name, snakemake.output[name])
        print(f"{name}: {len(frame)} rows")
    write_text(snakemake.output.summary, summary + "\n")
