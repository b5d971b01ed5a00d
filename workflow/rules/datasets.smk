rule prepare_dataset:
    output:
        f"{OUT}/datasets/{{dataset}}/manifest.json",
    log:
        f"{OUT}/logs/prepare_dataset/{{dataset}}.log",
    params:
        options=dataset_options,
        root=lambda wildcards: f"{OUT}/datasets/{wildcards.dataset}",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../../scripts/prepare_dataset.py"
