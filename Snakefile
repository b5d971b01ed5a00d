# firstlayer-zoo: what the first conv layer of each checkpoint in a zoo learned, and why.
# Stages: datasets -> zoos -> patch statistics -> checkpoint analyses (stems and profiles, in shards) -> tables and plots.
from snakemake.utils import min_version

min_version("9.0")


# The study is config.yaml, or exactly the files given with --configfile (which Snakemake would
# otherwise merge into config.yaml, keeping its zoos); --config key=value overrides either.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/zoos.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/fetch.smk"


rule all:
    input:
        study_outputs(),
    default_target: True
