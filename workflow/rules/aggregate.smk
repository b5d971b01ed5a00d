from firstlayer_zoo.paths import PAPER_VALUES


# Every successful run ends by printing the study's summary: per zoo, ok and skipped by reason.
onsuccess:
    summary = Path(PATHS.summary)
    if summary.exists():
        print(summary.read_text(), end="")


rule build_tables:
    input:
        analyses=all_analyses,
        paper_values=str(PAPER_VALUES),
    output:
        **{table: PATHS.table(table) for table in TABLES
           if table not in ("checkpoints", "consistency_summary", "paper_comparison")},
        paper_comparison=report(
            PATHS.table("paper_comparison"), caption="../report/paper_comparison.rst", category="Tables"
        ),
        checkpoints=report(PATHS.table("checkpoints"), caption="../report/checkpoints.rst", category="Tables"),
        consistency_summary=report(
            PATHS.table("consistency_summary"), caption="../report/consistency_summary.rst", category="Tables"
        ),
        summary=PATHS.summary,
    log:
        PATHS.log("build_tables"),
    params:
        logs=PATHS.logs,
        consistency=STUDY.consistency.to_dict(),
        datasets=STUDY.datasets,
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
        **{table: PATHS.table(table)
           for table in ("checkpoints", "profiles", "fits", "autocorrelation", "paper_comparison")},
    output:
        profiles=report(PATHS.plot("profiles"), caption="../report/profiles.rst", category="Profiles"),
        fits=report(PATHS.plot("fits"), caption="../report/fits.rst", category="Analytic fit"),
        fit_quality=report(
            PATHS.plot("fit_quality"), caption="../report/fit_quality.rst", category="Analytic fit"
        ),
        training_time=report(
            PATHS.plot("training_time"), caption="../report/training_time.rst", category="Training time"
        ),
        whitening=report(PATHS.plot("whitening"), caption="../report/whitening.rst", category="Whitening"),
        autocorrelation=report(
            PATHS.plot("autocorrelation"), caption="../report/autocorrelation.rst", category="Whitening"
        ),
        colour=report(PATHS.plot("colour"), caption="../report/colour.rst", category="Colour"),
        paper_comparison=report(
            PATHS.plot("paper_comparison"), caption="../report/paper_comparison.rst", category="The paper's numbers"
        ),
    log:
        PATHS.log("plot_study"),
    params:
        examples=STUDY.plots.fit_examples,
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
        checkpoints=PATHS.table("checkpoints"),
        consistency=PATHS.table("consistency"),
        groups=PATHS.table("consistency_groups"),
        bases=study_basis_files,
        analyses=all_analyses,
    output:
        # One figure a basis in each folder, <basis slug>.png: a folder, as a zoo listed by a job adds bases
        # once its listing exists.
        consistency=report(
            directory(PATHS.basis_plots("consistency")),
            patterns=["{basis}.png"],
            caption="../report/consistency.rst",
            category="Consistency",
            subcategory="{basis}",
        ),
        filters=report(
            directory(PATHS.basis_plots("filters")),
            patterns=["{basis}.png"],
            caption="../report/filters.rst",
            category="Filters",
            subcategory="{basis}",
        ),
    log:
        PATHS.log("plot_bases"),
    params:
        slugs=basis_slugs,
        kernel_sizes=basis_kernel_sizes_by_slug,
        heatmap_checkpoints=STUDY.plots.heatmap_checkpoints,
        filter_checkpoints=STUDY.plots.filter_checkpoints,
    conda:
        "../../envs/analysis.yaml"
    # Processes drawing bases side by side (a whole timm zoo has 170 bases, about a second each); Snakemake
    # gives no more than --cores.
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../../scripts/plot_bases.py"

