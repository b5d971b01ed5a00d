checkpoint unpack_archive:
    output:
        root=directory(PATHS.archive_root()),
        index=PATHS.archive_index(),
    log:
        PATHS.log("unpack_archive", "{zoo}"),
    params:
        options=archive_options,
        outdir=PATHS.outdir,
        limits=STUDY.limits.to_dict(),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    script:
        "../../scripts/unpack_archive.py"
