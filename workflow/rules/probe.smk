rule probe:
    input:
        simclr="features/simclr.npz",
        random="features/random.npz",
    output:
        metrics="metrics/probe.json",
        per_class="metrics/plots/per_class.csv",
        confusion="metrics/plots/confusion.csv",
    params:
        cfg=stage_config("probe"),
        features_dir="features",
        plots_dir="metrics/plots",
    log:
        "logs/probe.log",
    threads: workflow.cores
    shell:
        "simclr probe --features-dir {params.features_dir} --metrics {output.metrics}"
        " --plots-dir {params.plots_dir} --config {params.cfg:q} 2>&1 | tee {log}"
