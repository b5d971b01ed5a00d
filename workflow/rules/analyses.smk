rule analyse_checkpoints:
    input:
        checkpoints=shard_checkpoint_files,
        bases=shard_basis_files,
    output:
        PATHS.analyses(),
    log:
        PATHS.log("analyse_checkpoints", "{zoo}", "{shard}"),
    params:
        specs=shard_specs,
        bases=shard_bases,
        subtract_init=STUDY.analysis.subtract_init,
        strict=STUDY.analysis.strict,
        limits=STUDY.limits.to_dict(),
        # A new layout of the shard files reruns every shard.
        layout=SHARD_LAYOUT,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../../scripts/analyse_checkpoints.py"
