# Dense training of every seed (A and B alike), with snapshots at the rewind epochs.


rule train_dense:
    input:
        code=TRAIN_CODE + lib("provenance.py"),
        script=SCRIPTS / "train_dense.py",
    output:
        final=f"{RESULTS}/w{{width}}/seed{{seed}}/dense/final.pt",
        snapshots=[f"{RESULTS}/w{{width}}/seed{{seed}}/dense/ep{k}.pt" for k in SNAPSHOTS],
        metrics=f"{RESULTS}/w{{width}}/seed{{seed}}/dense/metrics.json",
    params:
        dataset=f"--dataset {config['dataset']['name']}",
        train=flags(config["dense"]),
        snapshots=" ".join(map(str, SNAPSHOTS)),
        out_dir=lambda wc, output: Path(output.final).parent,
        model=lambda wc: model_flags(wc.width),
    threads: RUNTIME["threads"]
    resources:
        **job_resources("train_dense"),
    retries: RETRIES["train_dense"]
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/dense/w{{width}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dense/w{{width}}_seed{{seed}}.tsv"
    shell:
        logged(
            "python {input.script} {params.dataset} {params.model} {params.train} "
            "--threads {threads} --seed {wildcards.seed} --snapshot-epochs {params.snapshots} "
            "--out-dir {params.out_dir}"
        )
