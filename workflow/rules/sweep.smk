# Sweeps (sweeps/<name>.yaml): every grid point runs pretrain -> extract -> probe in its own folder,
# results/sweeps/<name>/<point>/, from the workflow's prepared dataset and manifest; the rule `sweep`
# sums the points up in sweeps/<name>/sweep.csv and sweep.png (committed beside the sweep file; dvc.yaml's
# top-level plots show them). `snakemake sweep_<name> --cores 2 --resources gpu=1` runs one sweep. The point
# rules are the pipeline's own rules (`use rule`), with the point's params and paths; the helpers they call
# (load_sweep, point_config, sweep_probes) are in common.smk.


wildcard_constraints:
    sweep="[A-Za-z0-9_.-]+",
    point="[^/]+",


use rule pretrain as sweep_pretrain with:
    output:
        model=f"{SWEEP_RUNS}/models/simclr.pt",
        metrics=f"{SWEEP_RUNS}/metrics/pretrain/metrics.json",
    params:
        cfg=point_config("pretrain"),
        live_dir=lambda wildcards, output: os.path.dirname(output.metrics),
        checkpoints=lambda wildcards: f"{RESULTS}/sweeps/{wildcards.sweep}/{wildcards.point}/checkpoints",
    log:
        f"{LOGS}/sweeps/{{sweep}}/{{point}}/pretrain.log",


use rule extract as sweep_extract with:
    input:
        manifest=MANIFEST,
        dataset=DATASET,
        model=rules.sweep_pretrain.output.model,
        code=code("extract"),
    output:
        simclr=f"{SWEEP_RUNS}/features/simclr.npz",
        random=f"{SWEEP_RUNS}/features/random.npz",
    params:
        cfg=point_config("extract"),
        out_dir=lambda wildcards, output: os.path.dirname(output.simclr),
    log:
        f"{LOGS}/sweeps/{{sweep}}/{{point}}/extract.log",


use rule probe as sweep_probe with:
    input:
        simclr=rules.sweep_extract.output.simclr,
        random=rules.sweep_extract.output.random,
        code=code("probe"),
    output:
        metrics=f"{SWEEP_RUNS}/metrics/probe.json",
        per_class=f"{SWEEP_RUNS}/metrics/plots/per_class.csv",
        confusion=f"{SWEEP_RUNS}/metrics/plots/confusion.csv",
        embedding=f"{SWEEP_RUNS}/metrics/plots/embedding.png",
    params:
        cfg=point_config("probe"),
        features_dir=lambda wildcards, input: os.path.dirname(input.simclr),
        plots_dir=lambda wildcards, output: os.path.dirname(output.per_class),
    log:
        f"{LOGS}/sweeps/{{sweep}}/{{point}}/probe.log",


rule sweep:
    input:
        spec=f"{SWEEPS}/{{sweep}}.yaml",
        probes=lambda wildcards: sweep_probes(wildcards.sweep),
        costs=lambda wildcards: sweep_costs(wildcards.sweep),
        code=code("sweep"),
    output:
        table=report(
            f"{SWEEPS}/{{sweep}}/sweep.csv",
            caption="../report/sweep_table.rst",
            category="Sweeps",
            subcategory="{sweep}",
        ),
        plot=report(
            f"{SWEEPS}/{{sweep}}/sweep.png",
            caption="../report/sweep_plot.rst",
            category="Sweeps",
            subcategory="{sweep}",
        ),
    params:
        cfg=CONFIG_JSON,
        runs=lambda wildcards: f"{RESULTS}/sweeps/{wildcards.sweep}",
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
    conda:
        "../envs/simclr.yaml"
    log:
        f"{LOGS}/sweeps/{{sweep}}/sweep.log",
    shell:
        "simclr sweep {input.spec} --config {params.cfg:q} --runs {params.runs} --out-dir {params.out_dir}"
        " 2>&1 | tee {log}"


# One target per sweep file: snakemake sweep_<name>. It asks for every point's probe metrics too:
# Snakemake does not remake a missing intermediate file while the files made from it are up to
# date, so a point whose metrics were deleted would otherwise be left out until the table is asked for.
for _name in sweep_names():

    rule:
        name:
            f"sweep_{_name}"
        input:
            expand(rules.sweep.output, sweep=_name),
            lambda wildcards, name=_name: sweep_probes(name),
