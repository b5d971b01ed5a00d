rule train_run:
    input:
        train_run_dataset_manifests,
    output:
        directory(f"{OUT}/zoos/{{zoo}}/runs/{{run}}"),
    log:
        f"{OUT}/logs/train_run/{{zoo}}/{{run}}.log",
    params:
        run=train_run,
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
