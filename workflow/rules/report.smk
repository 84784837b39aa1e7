# Every run -> summary.csv and table.md (mean ± std over seed pairs) -> the paper's figures.
# Outputs marked report(...) go into `snakemake --report results/<name>/report.html`, each with
# the caption in workflow/report/ that says what to look for.

PAPER = os.path.relpath(f"{workflow.basedir}/workflow/report/paper_results.csv")


rule summarize:
    input:
        code=lib("report.py", "provenance.py"),
        script=SCRIPTS / "summarize.py",
        paper=PAPER,
        metrics=sparse_metrics(),
    output:
        summary=report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="1 Results"),
        table=report(f"{RESULTS}/table.md", caption="../report/table.rst", category="1 Results"),
        gains=report(f"{RESULTS}/gains.csv", caption="../report/gains_table.rst", category="1 Results"),
        environment=report(
            f"{RESULTS}/environment.csv", caption="../report/environment.rst", category="4 Reproducibility"
        ),
    conda:
        CONDA_ENV
    resources:
        **job_resources("summarize"),
    log:
        f"{RESULTS}/logs/summarize.log",
    benchmark:
        f"{RESULTS}/benchmarks/summarize.tsv"
    shell:
        logged(
            "python {input.script} --metrics {input.metrics} --paper {input.paper} --summary {output.summary} "
            "--table {output.table} --gains {output.gains} --environment {output.environment}"
        )


rule plot:
    input:
        code=lib("report.py", "provenance.py"),
        script=SCRIPTS / "plot.py",
        summary=f"{RESULTS}/summary.csv",
        paper=PAPER,
    output:
        vs_k=report(f"{RESULTS}/plots/accuracy_vs_k.png", caption="../report/accuracy_vs_k.rst", category="2 Figures"),
        vs_sparsity=report(
            f"{RESULTS}/plots/accuracy_vs_sparsity.png", caption="../report/accuracy.rst", category="2 Figures"
        ),
        gain=report(f"{RESULTS}/plots/gain.png", caption="../report/gain.rst", category="2 Figures"),
    conda:
        CONDA_ENV
    resources:
        **job_resources("plot"),
    log:
        f"{RESULTS}/logs/plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot.tsv"
    shell:
        logged(
            "python {input.script} --summary {input.summary} --paper {input.paper} --vs-sparsity {output.vs_sparsity} "
            "--vs-k {output.vs_k} --gain {output.gain}"
        )
