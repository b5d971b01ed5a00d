# firstlayer-zoo: what the first conv layer of each checkpoint in a zoo learned, and why.
# Stages: datasets -> zoos -> patch statistics -> stems -> profiles -> tables and plots.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/zoos.smk"
include: "workflow/rules/archives.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        study_outputs(),
    default_target: True
