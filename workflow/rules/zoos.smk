rule train_run:
    input:
        train_run_dataset_manifests,
    output:
        directory(PATHS.run_dir()),
    log:
        PATHS.log("train_run", "{zoo}", "{run}"),
    params:
        run=lambda wildcards: train_run(wildcards).to_dict(),
        datasets=train_run_datasets,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        # `--resources train_slots=N` caps the runs training at once: on one GPU, N runs share it.
        train_slots=1,
        gpu=train_run_gpus,
    script:
        "../../scripts/train_run.py"
