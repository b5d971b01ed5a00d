rule patch_statistics:
    input:
        dataset_manifest,
    output:
        PATHS.basis(),
    log:
        PATHS.log("patch_statistics", "{dataset}", "{prep}", "k{kernels}_c{c}"),
    params:
        options=dataset_options,
        root=dataset_root,
        preprocessing=basis_preprocessing,
        kernel_sizes=basis_kernel_sizes,
        device=STUDY.analysis.statistics_torch_device,
        autocorrelation_offsets=STUDY.analysis.autocorrelation_offsets,
        moments=STUDY.analysis.moments,
    conda:
        "../../envs/torch.yaml"
    # Every shard waits for its bases: compute them while checkpoints are still being trained or fetched.
    priority: 10
    threads: basis_threads
    resources:
        mem_mb=8000,
        runtime=240,
        # Schedulers place the job on a GPU only when the config asks for cuda
        # (the SLURM executor turns gpu=1 into --gpus=1).
        gpu=STUDY.analysis.statistics_gpus,
    script:
        "../../scripts/patch_statistics.py"
