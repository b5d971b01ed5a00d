rule profile_stem:
    input:
        stem=f"{OUT}/stems/{{zoo}}/{{name}}.npz",
        basis=basis_file,
    output:
        f"{OUT}/profiles/{{zoo}}/{{name}}.npz",
    log:
        f"{OUT}/logs/profile_stem/{{zoo}}/{{name}}.log",
    params:
        spec=checkpoint_spec,
        subtract_init=config["analysis"]["subtract_init"],
        strict=config["analysis"]["strict"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../../scripts/profile_stem.py"
