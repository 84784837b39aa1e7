# ticketalign: align lottery-ticket masks across random inits by weight symmetry.
# `snakemake --cores 2` runs the embedded default (config.yaml); presets/ hold the paper's runs:
#   snakemake --cores 1 --resources gpu=1 --configfile presets/cifar10_resnet20.yaml
from snakemake.utils import min_version

min_version("9.0")

# The config (config.yaml, or the files given with --configfile) is loaded and validated in
# workflow/rules/common.smk before any job is scheduled.


include: "workflow/rules/common.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/dense.smk"
include: "workflow/rules/imp.smk"
include: "workflow/rules/match.smk"
include: "workflow/rules/sparse.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/diagnostics.smk"


rule all:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/table.md",
        f"{RESULTS}/gains.csv",
        f"{RESULTS}/environment.csv",
        f"{RESULTS}/plots/accuracy_vs_k.png",
        f"{RESULTS}/plots/accuracy_vs_sparsity.png",
        f"{RESULTS}/plots/gain.png",
        diagnostics_outputs(),
    default_target: True
