# Two steps: the exact statistics of a dataset's patches under one pixel pipeline (resize, crop, interpolation),
# the costly part, then the bases of every preprocessing that shares those pixels (its normalisation applied
# analytically, then decomposed), a fraction of a second to seconds each.
rule patch_statistics:
    input:
        dataset_manifest,
    output:
        PATHS.pixel_statistics(),
    log:
        PATHS.log("patch_statistics", "{dataset}", "{pixels}", "k{kernels}_c{c}"),
    params:
        options=dataset_options,
        root=dataset_root,
        preprocessing=pixel_preprocessing,
        kernel_sizes=basis_kernel_sizes,
        device=STUDY.analysis.statistics_torch_device,
        autocorrelation_offsets=STUDY.analysis.autocorrelation_offsets,
    conda:
        "../../envs/torch.yaml"
    # Every shard waits for its bases: compute them while checkpoints are still being trained or fetched.
    priority: 10
    threads: statistics_threads
    resources:
        mem_mb=8000,
        runtime=240,
        # Schedulers place the job on a GPU only when the config asks for cuda
        # (the SLURM executor turns gpu=1 into --gpus=1).
        gpu=STUDY.analysis.statistics_gpus,
    script:
        "../../scripts/patch_statistics.py"


rule patch_basis:
    input:
        basis_pixel_statistics,
    output:
        PATHS.basis(),
    log:
        PATHS.log("patch_basis", "{dataset}", "{prep}", "k{kernels}_c{c}"),
    params:
        preprocessing=basis_preprocessing,
        kernel_sizes=basis_kernel_sizes,
        moments=STUDY.analysis.moments,
    conda:
        "../../envs/analysis.yaml"
    priority: 10
    # The eigendecomposition runs on one thread whatever it is given (firstlayer_zoo.basis.eigendecomposition).
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../../scripts/patch_basis.py"
