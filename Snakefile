# SimCLR pipeline: prepare -> validate -> pretrain -> extract -> probe.
#   snakemake --cores 1 --resources gpu=1
# The same DAG is in dvc.yaml (tests/test_dag.py keeps the two in step).
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/probe.smk"


# The dataset, model and features are DVC outputs, never committed; asking for them makes a fresh
# clone, which has the committed manifest and metrics but nothing else, run the whole chain.
rule all:
    input:
        DATASET,
        "models/simclr.pt",
        "features/simclr.npz",
        "features/random.npz",
        "metrics/probe.json",
    default_target: True
