rule train_run:
    input:
        train_run_dataset_manifest,
    output:
        directory(f"{OUT}/zoos/{{zoo}}/runs/{{run}}"),
    log:
        f"{OUT}/logs/train_run/{{zoo}}/{{run}}.log",
    params:
        run=train_run,
        dataset_options=lambda wildcards: STUDY.datasets[train_run(wildcards)["dataset"]],
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../../scripts/train_run.py"
