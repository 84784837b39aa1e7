# Align A to B (find pi), then permute A's masks with pi.


rule match:
    input:
        code=COMMON_CODE + lib("permutation"),
        script=SCRIPTS / "match.py",
        a=f"{RESULTS}/w{{width}}/seed{{a}}/dense/final.pt",
        b=f"{RESULTS}/w{{width}}/seed{{b}}/dense/final.pt",
    output:
        perm=f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/{{method}}/perm.pt",
    params:
        dataset=f"--dataset {config['dataset']['name']}",
        options=lambda wc: flags(config["matching"][wc.method]),
        model=lambda wc: model_flags(wc.width),
    threads: RUNTIME["threads"]
    resources:
        **job_resources("match"),  # GPU for activation matching only: weight matching runs on the CPU
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/match/w{{width}}_pair{{a}}-{{b}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/match/w{{width}}_pair{{a}}-{{b}}_{{method}}.tsv"
    shell:
        logged(
            "python {input.script} {params.dataset} {params.model} --threads {threads} "
            "--method {wildcards.method} {params.options} --model-a {input.a} --model-b {input.b} "
            "--seeds {wildcards.a} {wildcards.b} --out {output.perm}"
        )


rule permute_mask:
    input:
        code=COMMON_CODE,
        script=SCRIPTS / "permute_mask.py",
        perms=[f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/{m}/perm.pt" for m in METHODS],
        mask=f"{RESULTS}/w{{width}}/seed{{a}}/imp/mask_s{{sp}}.pt",
    output:
        masks=[f"{RESULTS}/w{{width}}/pair{{a}}-{{b}}/{m}/mask_s{{sp}}.pt" for m in METHODS],
    params:
        dataset=f"--dataset {config['dataset']['name']}",
        methods=" ".join(METHODS),
        model=lambda wc: model_flags(wc.width),
    conda:
        CONDA_ENV
    resources:
        **job_resources("permute_mask"),
    log:
        f"{RESULTS}/logs/permute_mask/w{{width}}_pair{{a}}-{{b}}_s{{sp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/permute_mask/w{{width}}_pair{{a}}-{{b}}_s{{sp}}.tsv"
    shell:
        logged(
            "python {input.script} {params.dataset} {params.model} --seeds {wildcards.a} {wildcards.b} "
            "--sparsity {wildcards.sp} --mask {input.mask} --methods {params.methods} --perms {input.perms} "
            "--outs {output.masks}"
        )
