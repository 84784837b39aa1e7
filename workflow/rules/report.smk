# Every run -> summary.csv and table.md (mean ± std over seed pairs) -> plot.


rule summarize:
    input:
        code=lib("report.py"),
        script=SCRIPTS / "summarize.py",
        paper=os.path.relpath(f"{workflow.basedir}/workflow/report/paper_results.csv"),
        metrics=sparse_metrics(),
    output:
        summary=report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Results"),
        table=f"{RESULTS}/table.md",
    conda:
        CONDA_ENV
    resources:
        **job_resources("summarize"),
    log:
        f"{RESULTS}/logs/summarize.log",
    benchmark:
        f"{RESULTS}/benchmarks/summarize.tsv"
    shell:
        "python {input.script} --metrics {input.metrics} --paper {input.paper} --summary {output.summary} "
        "--table {output.table} > {log} 2>&1"


rule plot:
    input:
        code=lib("report.py"),
        script=SCRIPTS / "plot.py",
        summary=f"{RESULTS}/summary.csv",
    output:
        report(f"{RESULTS}/plots/accuracy_vs_sparsity.png", caption="../report/accuracy.rst", category="Results"),
    conda:
        CONDA_ENV
    resources:
        **job_resources("plot"),
    log:
        f"{RESULTS}/logs/plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot.tsv"
    shell:
        "python {input.script} --summary {input.summary} --out {output} > {log} 2>&1"
