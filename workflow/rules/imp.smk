# IMP on model A: one chain of levels per seed serves every target sparsity.


rule imp:
    input:
        code=TRAIN_CODE + lib("pruning.py"),
        script=SCRIPTS / "imp.py",
        dense=f"{RESULTS}/w{{width}}/seed{{seed}}/dense/final.pt",
        rewind=(
            [f"{RESULTS}/w{{width}}/seed{{seed}}/dense/ep{config['imp']['rewind_epoch']}.pt"]
            if IMP_REWIND
            else []
        ),
    output:
        masks=[f"{RESULTS}/w{{width}}/seed{{seed}}/imp/mask_s{sp}.pt" for sp in SPARSITIES],
        metrics=f"{RESULTS}/w{{width}}/seed{{seed}}/imp/metrics.json",
    params:
        dataset=f"--dataset {config['dataset']['name']}",
        train=flags(config["imp"]["train"]),
        rate=config["imp"]["prune_rate"],
        sparsities=" ".join(SPARSITIES),
        rewind=lambda wc, input: f"--rewind-state {input.rewind[0]}" if input.rewind else "",
        out_dir=lambda wc, output: Path(output.metrics).parent,
        model=lambda wc: model_flags(wc.width),
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/imp/w{{width}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/imp/w{{width}}_seed{{seed}}.tsv"
    shell:
        "python {input.script} {params.dataset} {params.model} {params.train} "
        "--threads {threads} --seed {wildcards.seed} --dense {input.dense} {params.rewind} "
        "--prune-rate {params.rate} --sparsities {params.sparsities} --out-dir {params.out_dir} > {log} 2>&1"
