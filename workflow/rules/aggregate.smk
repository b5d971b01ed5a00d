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


# The figures come from two jobs, not one a figure: each job pays seconds of imports for
# milliseconds of drawing, and every figure is redrawn whenever the tables change anyway.
rule plot_study:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        profiles=f"{OUT}/tables/profiles.parquet",
        fits=f"{OUT}/tables/fits.parquet",
        autocorrelation=f"{OUT}/tables/autocorrelation.parquet",
    output:
        profiles=report(f"{OUT}/plots/profiles.png", caption="../report/profiles.rst", category="Profiles"),
        fits=report(f"{OUT}/plots/fits.png", caption="../report/fits.rst", category="Analytic fit"),
        fit_quality=report(
            f"{OUT}/plots/fit_quality.png", caption="../report/fit_quality.rst", category="Analytic fit"
        ),
        training_time=report(
            f"{OUT}/plots/training_time.png", caption="../report/training_time.rst", category="Training time"
        ),
        whitening=report(f"{OUT}/plots/whitening.png", caption="../report/whitening.rst", category="Whitening"),
        autocorrelation=report(
            f"{OUT}/plots/autocorrelation.png", caption="../report/autocorrelation.rst", category="Whitening"
        ),
        colour=report(f"{OUT}/plots/colour.png", caption="../report/colour.rst", category="Colour"),
    log:
        f"{OUT}/logs/plot_study.log",
    params:
        examples=config["plots"]["fit_examples"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../../scripts/plot_study.py"


rule plot_bases:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        consistency=f"{OUT}/tables/consistency.parquet",
        groups=f"{OUT}/tables/consistency_groups.parquet",
        bases=[basis.path(OUT) for basis in STUDY.bases],
        analyses=all_analyses,
    output:
        consistency=[
            report(
                f"{OUT}/plots/consistency/{basis.slug}.png",
                caption="../report/consistency.rst",
                category="Consistency",
                subcategory=basis.slug,
            )
            for basis in STUDY.bases
        ],
        filters=[
            report(
                f"{OUT}/plots/filters/{basis.slug}.png",
                caption="../report/filters.rst",
                category="Filters",
                subcategory=basis.slug,
            )
            for basis in STUDY.bases
        ],
    log:
        f"{OUT}/logs/plot_bases.log",
    params:
        slugs=[basis.slug for basis in STUDY.bases],
        heatmap_checkpoints=config["plots"]["heatmap_checkpoints"],
        filter_checkpoints=config["plots"]["filter_checkpoints"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../../scripts/plot_bases.py"


rule paper_comparison:
    input:
        checkpoints=f"{OUT}/tables/checkpoints.parquet",
        profiles=f"{OUT}/tables/profiles.parquet",
        fits=f"{OUT}/tables/fits.parquet",
        paper_values=workflow.source_path("../resources/paper_values.csv"),
    output:
        table=report(
            f"{OUT}/tables/paper_comparison.parquet",
            caption="../report/paper_comparison.rst",
            category="Tables",
        ),
        plot=report(
            f"{OUT}/plots/paper_comparison.png",
            caption="../report/paper_comparison.rst",
            category="The paper's numbers",
        ),
    log:
        f"{OUT}/logs/paper_comparison.log",
    params:
        datasets=config["datasets"],
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../../scripts/paper_comparison.py"
