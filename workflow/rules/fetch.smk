# Downloads run where snakemake runs (a login node), never as cluster jobs on nodes without network.
localrules:
    fetch_checkpoints,
    fetch_remote,


rule fetch_checkpoints:
    output:
        PATHS.fetched(),
    log:
        PATHS.log("fetch_checkpoints", "{zoo}", "{shard}"),
    params:
        limits=STUDY.limits.to_dict(),
        specs=shard_specs,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../../scripts/fetch_checkpoints.py"


# `snakemake --cores N fetch_remote` on a machine with network (a login node) downloads every remote
# input of the study: datasets, archives, and the weights remote checkpoints are read from.
rule fetch_remote:
    input:
        remote_inputs,
