# IMP on model A: one chain of levels per seed serves every target sparsity. One job per target,
# run in order of sparsity; trained levels are cached in imp/levels/, so each job trains only the
# levels the previous targets did not need, then makes its capped prune.


rule imp:
    input:
        code=TRAIN_CODE + lib("pruning.py", "provenance.py"),
        script=SCRIPTS / "imp.py",
        dense=f"{RESULTS}/w{{width}}/seed{{seed}}/dense/final.pt",
        reset=(
            [f"{RESULTS}/w{{width}}/seed{{seed}}/dense/ep{config['imp']['reset_epoch']}.pt"]
            if IMP_RESET
            else []
        ),
        previous=previous_target_mask,
    output:
        mask=f"{RESULTS}/w{{width}}/seed{{seed}}/imp/mask_s{{sp}}.pt",
        metrics=f"{RESULTS}/w{{width}}/seed{{seed}}/imp/metrics_s{{sp}}.json",
    params:
        dataset=f"--dataset {config['dataset']['name']}",
        train=flags(config["imp"]["train"]),
        rate=config["imp"]["prune_rate"],
        reset=lambda wc, input: (
            f"--reset-state {input.reset[0]} --reset-epoch {config['imp']['reset_epoch']}" if input.reset else ""
        ),
        out_dir=lambda wc, output: Path(output.mask).parent,
        model=lambda wc: model_flags(wc.width),
    threads: RUNTIME["threads"]
    resources:
        **job_resources("imp"),
    retries: RETRIES["imp"]
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/imp/w{{width}}_seed{{seed}}_s{{sp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/imp/w{{width}}_seed{{seed}}_s{{sp}}.tsv"
    shell:
        logged(
            "python {input.script} {params.dataset} {params.model} {params.train} "
            "--threads {threads} --seed {wildcards.seed} --dense {input.dense} {params.reset} "
            "--prune-rate {params.rate} --sparsity {wildcards.sp} --out-dir {params.out_dir}"
        )
