rule patch_statistics:
    input:
        dataset_manifest,
    output:
        f"{OUT}/bases/{{dataset}}/{{prep}}/k{{k}}_c{{c}}.npz",
    log:
        f"{OUT}/logs/patch_statistics/{{dataset}}/{{prep}}/k{{k}}_c{{c}}.log",
    params:
        options=dataset_options,
        root=lambda wildcards: f"{OUT}/datasets/{wildcards.dataset}",
        preprocessing=basis_preprocessing,
        device=statistics_device(),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=statistics_gpus(),
    script:
        "../../scripts/patch_statistics.py"
