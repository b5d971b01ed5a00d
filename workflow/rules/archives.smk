checkpoint unpack_archive:
    output:
        root=directory(f"{OUT}/zoos/{{zoo}}/archive"),
        index=f"{OUT}/zoos/{{zoo}}/archive_index.json",
    log:
        f"{OUT}/logs/unpack_archive/{{zoo}}.log",
    params:
        options=archive_options,
        outdir=OUT,
        limits=STUDY.limits.to_dict(),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    script:
        "../../scripts/unpack_archive.py"
