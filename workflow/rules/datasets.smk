rule prepare_dataset:
    output:
        PATHS.manifest(),
    log:
        PATHS.log("prepare_dataset", "{dataset}"),
    params:
        options=dataset_options,
        root=dataset_root,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../../scripts/prepare_dataset.py"
