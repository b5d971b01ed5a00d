# Downloads run where snakemake runs (a login node), never as cluster jobs on nodes without network.
localrules:
    fetch_checkpoint,
    fetch_remote,


rule fetch_checkpoint:
    output:
        f"{OUT}/fetched/{{zoo}}/{{name}}.json",
    log:
        f"{OUT}/logs/fetch_checkpoint/{{zoo}}/{{name}}.log",
    params:
        spec=fetch_spec,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../../scripts/fetch_checkpoint.py"


# `snakemake --cores N fetch_remote` on a machine with network (a login node) downloads every remote
# input of the study: datasets, archives, and the weights remote checkpoints are read from.
rule fetch_remote:
    input:
        remote_inputs(),
