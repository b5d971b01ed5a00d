# Every successful run ends by printing the study's summary: per zoo, ok and skipped by reason.
onsuccess:
    summary = Path(f"{OUT}/tables/summary.txt")
    if summary.exists():
        print(summary.read_text(), end="")


rule build_tables:
    input:
        all_analyses,
    output:
        checkpoints=report(
            f"{OUT}/tables/checkpoints.parquet",
            caption="../report/checkpoints.rst",
            category="Tables",
        ),
        profiles=f"{OUT}/tables/profiles.parquet",
        fits=f"{OUT}/tables/fits.parquet",
        consistency=f"{OUT}/tables/consistency.parquet",
        autocorrelation=f"{OUT}/tables/autocorrelation.parquet",
        consistency_summary=report(
            f"{OUT}/tables/consistency_summary.parquet",
            caption="../report/consistency_summary.rst",
            category="Tables",
        ),
        consistency_groups=f"{OUT}/tables/consistency_groups.parquet",
        summary=f"{OUT}/tables/summary.txt",
    log:
        f"{OUT}/logs/build_tables.log",
    params:
        limits=config["consistency"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../../scripts/build_tables.py"


rule plot_profiles:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        profiles=f"{OUT}/tables/profiles.parquet",
    output:
        report(f"{OUT}/plots/profiles.png", caption="../report/profiles.rst", category="Profiles"),
    log:
        f"{OUT}/logs/plots/profiles.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_profiles.py"


rule plot_consistency:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        consistency=f"{OUT}/tables/consistency.parquet",
        groups=f"{OUT}/tables/consistency_groups.parquet",
    output:
        report(
            f"{OUT}/plots/consistency/{{basis}}.png",
            caption="../report/consistency.rst",
            category="Consistency",
            subcategory="{basis}",
        ),
    log:
        f"{OUT}/logs/plots/consistency/{{basis}}.log",
    params:
        max_checkpoints=config["plots"]["heatmap_checkpoints"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_consistency.py"


rule plot_fits:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        profiles=f"{OUT}/tables/profiles.parquet",
        fits=f"{OUT}/tables/fits.parquet",
    output:
        examples=report(f"{OUT}/plots/fits.png", caption="../report/fits.rst", category="Analytic fit"),
        quality=report(
            f"{OUT}/plots/fit_quality.png", caption="../report/fit_quality.rst", category="Analytic fit"
        ),
    log:
        f"{OUT}/logs/plots/fits.log",
    params:
        examples=config["plots"]["fit_examples"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_fits.py"


rule plot_training_time:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        fits=f"{OUT}/tables/fits.parquet",
    output:
        report(
            f"{OUT}/plots/training_time.png",
            caption="../report/training_time.rst",
            category="Training time",
        ),
    log:
        f"{OUT}/logs/plots/training_time.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_training_time.py"


rule plot_whitening:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        fits=f"{OUT}/tables/fits.parquet",
    output:
        report(f"{OUT}/plots/whitening.png", caption="../report/whitening.rst", category="Whitening"),
    log:
        f"{OUT}/logs/plots/whitening.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_whitening.py"


rule plot_autocorrelation:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        autocorrelation=f"{OUT}/tables/autocorrelation.parquet",
    output:
        report(
            f"{OUT}/plots/autocorrelation.png",
            caption="../report/autocorrelation.rst",
            category="Whitening",
        ),
    log:
        f"{OUT}/logs/plots/autocorrelation.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_autocorrelation.py"


rule plot_colour:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        fits=f"{OUT}/tables/fits.parquet",
    output:
        report(f"{OUT}/plots/colour.png", caption="../report/colour.rst", category="Colour"),
    log:
        f"{OUT}/logs/plots/colour.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_colour.py"


rule plot_filters:
    input:
        analyses=basis_analyses,
        basis=basis_of_slug,
    output:
        report(
            f"{OUT}/plots/filters/{{basis}}.png",
            caption="../report/filters.rst",
            category="Filters",
            subcategory="{basis}",
        ),
    log:
        f"{OUT}/logs/plots/filters/{{basis}}.log",
    params:
        checkpoints=config["plots"]["filter_checkpoints"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../../scripts/plot_filters.py"
