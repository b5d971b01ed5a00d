rule train_run:
    input:
        train_run_dataset_manifest,
    output:
        directory(PATHS.run_dir()),
    log:
        PATHS.log("train_run", "{zoo}", "{run}"),
    params:
        run=lambda wildcards: train_run(wildcards).to_dict(),
        dataset_root=train_run_dataset_root,
        dataset_options=lambda wildcards: STUDY.datasets[train_run(wildcards).dataset],
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../../scripts/train_run.py"
