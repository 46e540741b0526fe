rule probe:
    input:
        simclr="features/simclr.npz",
        random="features/random.npz",
    output:
        metrics=report(
            "metrics/probe.json",
            caption="../report/probe_metrics.rst",
            category="Probe",
        ),
        per_class=report(
            "metrics/plots/per_class.csv",
            caption="../report/per_class.rst",
            category="Probe",
        ),
        confusion="metrics/plots/confusion.csv",
        embedding=report(
            "metrics/plots/embedding.png",
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
        "logs/probe.log",
    threads: CORES
    shell:
        "simclr probe --features-dir {params.features_dir} --metrics {output.metrics}"
        " --plots-dir {params.plots_dir} --config {params.cfg:q} 2>&1 | tee {log}"
