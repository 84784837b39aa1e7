# The diagnostics that explain the result (ticketalign.analysis), each switched by the config's
# `diagnostics` section: linear mode connectivity and mask overlap per (width, seed pair),
# ensemble diversity over every sparse run's saved test logits, then one tabulation.

rule lmc:
    input:
        code=TRAIN_CODE + lib("analysis.py"),
        script=SCRIPTS / "lmc.py",
        a=f"{RESULTS}/w{{width}}/seed{{a}}/dense/final.pt",
        b=f"{RESULTS}/w{{width}}/seed{{b}}/dense/final.pt",
        perms=[f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/{m}/perm.pt" for m in METHODS],
    output:
        f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/lmc.json",
    params:
        dataset=f"--dataset {config['dataset']['name']}",
        options=flags(LMC_OPTIONS),
        perms=lambda wc, input: " ".join(f"--perm {m}={p}" for m, p in zip(METHODS, input.perms)),
        model=lambda wc: model_flags(wc.width),
    threads: RUNTIME["threads"]
    resources:
        **job_resources("lmc"),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/lmc/w{{width}}_pair{{a}}-{{b}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/lmc/w{{width}}_pair{{a}}-{{b}}.tsv"
    shell:
        logged(
            "python {input.script} {params.dataset} {params.model} {params.options} --threads {threads} "
            "--seed-a {wildcards.a} --seed-b {wildcards.b} --model-a {input.a} --model-b {input.b} {params.perms} "
            "--out {output}"
        )


rule mask_overlap:
    input:
        code=TRAIN_CODE + lib("analysis.py"),
        script=SCRIPTS / "mask_overlap.py",
        masks=[f"{RESULTS}/w{{width}}/seed{{a}}/imp/mask_s{sp}.pt" for sp in SPARSITIES],
        permuted=[f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/{m}/mask_s{sp}.pt" for m in METHODS for sp in SPARSITIES],
        perm=f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/{METHODS[0]}/perm.pt",
    output:
        f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/mask_overlap.json",
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/mask_overlap/w{{width}}_pair{{a}}-{{b}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/mask_overlap/w{{width}}_pair{{a}}-{{b}}.tsv"
    shell:
        logged(
            "python {input.script} --masks {input.masks} --permuted {input.permuted} --perm {input.perm} "
            "--seed {wildcards.b} --out {output}"
        )


rule diversity:
    input:
        code=TRAIN_CODE + lib("analysis.py"),
        script=SCRIPTS / "diversity.py",
        logits=sparse_logits(),
    output:
        report(f"{DIAG_DIR}/diversity.csv", caption="../report/diversity.rst", category="3 Diagnostics"),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/diversity.log",
    benchmark:
        f"{RESULTS}/benchmarks/diversity.tsv"
    shell:
        logged(
            "python {input.script} --logits {input.logits} --out {output}"
        )


rule diagnostics_report:
    input:
        code=lib("report.py", "provenance.py"),
        script=SCRIPTS / "diagnostics_report.py",
        lmc=per_pair("lmc.json") if DIAG["lmc"] else [],
        overlap=per_pair("mask_overlap.json") if DIAG["mask_overlap"] else [],
        diversity=[f"{DIAG_DIR}/diversity.csv"] if DIAG["diversity"] else [],
    output:
        markdown=report(f"{DIAG_DIR}/diagnostics.md", caption="../report/diagnostics.rst", category="3 Diagnostics"),
        barriers=(
            [report(f"{DIAG_DIR}/barriers.csv", caption="../report/barriers.rst", category="3 Diagnostics")]
            if DIAG["lmc"]
            else []
        ),
        lmc_plot=(
            [report(f"{DIAG_DIR}/lmc.png", caption="../report/lmc.rst", category="3 Diagnostics")] if DIAG["lmc"] else []
        ),
        overlap=(
            [report(f"{DIAG_DIR}/mask_overlap.csv", caption="../report/mask_overlap.rst", category="3 Diagnostics")]
            if DIAG["mask_overlap"]
            else []
        ),
        overlap_plot=(
            [report(f"{DIAG_DIR}/mask_overlap.png", caption="../report/mask_overlap.rst", category="3 Diagnostics")]
            if DIAG["mask_overlap"]
            else []
        ),
    params:
        diversity=lambda wc, input: f"--diversity {input.diversity[0]}" if input.diversity else "",
        out_dir=lambda wc, output: Path(output.markdown).parent,
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/diagnostics_report.log",
    benchmark:
        f"{RESULTS}/benchmarks/diagnostics_report.tsv"
    shell:
        logged(
            "python {input.script} --lmc {input.lmc} --overlap {input.overlap} {params.diversity} "
            "--out-dir {params.out_dir}"
        )
