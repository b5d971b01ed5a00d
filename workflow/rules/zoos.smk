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


# A zoo whose checkpoints are known only once a job has listed them (a download, an unpack, a Hub listing; any
# source with listed_by_job): the job keeps what they are read from in the zoo's listed/ folder and writes their
# listing, which the planner then reads (all_analyses waits for it: a Snakemake checkpoint).
checkpoint list_zoo:
    output:
        listing=PATHS.zoo_listing(),
        files=directory(PATHS.zoo_listed_files()),
    log:
        PATHS.log("list_zoo", "{zoo}"),
    params:
        options=zoo_options,
        outdir=PATHS.outdir,
        limits=STUDY.limits.to_dict(),
        # A zoo that lists again on every run (refresh: true) gets a new value each invocation.
        refresh=listing_refresh,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    script:
        "../../scripts/list_zoo.py"
