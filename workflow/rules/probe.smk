rule probe:
    input:
        simclr=rules.extract.output.simclr,
        random=rules.extract.output.random,
        code=code("probe"),
    output:
        metrics=report(
            PROBE,
            caption="../report/probe_metrics.rst",
            category="Probe",
        ),
        per_class=report(
            f"{PLOTS}/per_class.csv",
            caption="../report/per_class.rst",
            category="Probe",
        ),
        confusion=f"{PLOTS}/confusion.csv",
        embedding=report(
            f"{PLOTS}/embedding.png",
            caption="../report/embedding.rst",
            category="Probe",
        ),
    params:
        cfg=stage_config("probe"),
        features_dir=lambda wildcards, input: os.path.dirname(input.simclr),
        plots_dir=lambda wildcards, output: os.path.dirname(output.per_class),
    conda:
        "../envs/simclr.yaml"
    log:
        f"{LOGS}/probe.log",
    threads: CORES
    shell:
        "simclr probe --features-dir {params.features_dir} --metrics {output.metrics}"
        " --plots-dir {params.plots_dir} --config {params.cfg:q} 2>&1 | tee {log}"
