rule extract_stem:
    input:
        checkpoint_files,
    output:
        f"{OUT}/stems/{{zoo}}/{{name}}.npz",
    log:
        f"{OUT}/logs/extract_stem/{{zoo}}/{{name}}.log",
    params:
        spec=checkpoint_spec,
        strict=config["analysis"]["strict"],
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../../scripts/extract_stem.py"
