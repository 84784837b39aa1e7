# Sparse training of every variant for one (seed pair, sparsity, rewind epoch k).


rule train_sparse:
    input:
        unpack(permuted_masks),
        code=TRAIN_CODE + lib("pruning.py", "experiment.py", "predictions.py", "provenance.py"),
        script=SCRIPTS / "train_sparse.py",
        a_rewind=f"{RESULTS}/w{{width}}/seed{{a}}/dense/ep{{k}}.pt",
        b_rewind=f"{RESULTS}/w{{width}}/seed{{b}}/dense/ep{{k}}.pt",
        mask=f"{RESULTS}/w{{width}}/seed{{a}}/imp/mask_s{{sp}}.pt",
    output:
        metrics=[f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/sparse/s{{sp}}/k{{k}}/{run}/metrics.json" for run in RUNS],
        logits=(
            [f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/sparse/s{{sp}}/k{{k}}/{run}/logits.pt" for run in RUNS]
            if DIAG["diversity"]
            else []
        ),
    params:
        dataset=f"--dataset {config['dataset']['name']}",
        train=flags(config["sparse"]["train"]),
        variants=" ".join(VARIANTS),
        permuted=lambda wc, input: " ".join(f"--permuted-mask {m}={input[m]}" for m in permuted_masks(wc)),
        tags=lambda wc: (
            f"--tag dataset={config['dataset']['name']} --tag seed_a={wc.a} --tag seed_b={wc.b} --tag width={wc.width}"
        ),
        out_dir=lambda wc: f"{pair_dir(wc.width, wc.a, wc.b)}/sparse/s{wc.sp}/k{wc.k}",
        logits=str(DIAG["diversity"]).lower(),
        model=lambda wc: model_flags(wc.width),
    threads: RUNTIME["threads"]
    resources:
        **job_resources("train_sparse"),
    retries: RETRIES["train_sparse"]
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/sparse/w{{width}}_pair{{a}}-{{b}}_s{{sp}}_k{{k}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sparse/w{{width}}_pair{{a}}-{{b}}_s{{sp}}_k{{k}}.tsv"
    shell:
        logged(
            "python {input.script} {params.dataset} {params.model} {params.train} "
            "--threads {threads} --seed {wildcards.b} --seeds {wildcards.a} {wildcards.b} --sparsity {wildcards.sp} "
            "--rewind-epoch {wildcards.k} --a-rewind {input.a_rewind} --b-rewind {input.b_rewind} "
            "--mask {input.mask} {params.permuted} --variants {params.variants} {params.tags} --save-logits {params.logits} --out-dir {params.out_dir}"
        )
