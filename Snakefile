# SimCLR pipeline: prepare -> validate -> pretrain -> extract -> probe, into results/.
#   snakemake --cores 1 --resources gpu=1
# The same DAG is in dvc.yaml (tests/test_dag.py keeps the two in step), which writes the top-level
# data/, models/, features/ and metrics/ (the committed baseline); see workflow/rules/common.smk.
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
include: "workflow/rules/sweep.smk"


rule all:
    input:
        rules.probe.output,
        rules.pretrain.output.model,
    default_target: True


# A run that made (or kept) the pipeline's metrics ends with the headline numbers and where they are.
onsuccess:
    if os.path.exists(PROBE) and not workflow.dryrun:
        from simclr.probe import headline

        print(headline(json.loads(Path(PROBE).read_text()), PROBE, f"{PLOTS}/embedding.png"))


# Asking this workflow for a DVC output stops before any job, saying which file to ask for instead.
rule dvc_output:
    input:
        refuse_dvc_output,
    output:
        "{dvc_path}",
    wildcard_constraints:
        dvc_path="|".join(f"{re.escape(p)}(/.*)?" for p in dvc_outputs()),
    conda:
        "workflow/envs/simclr.yaml"
    log:
        f"{LOGS}/dvc_output/{{dvc_path}}.log",
    shell:
        "false"
