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
        features_dir=lambda wildcards, input: os.path.dirname(input.simclr),
        plots_dir=lambda wildcards, output: os.path.dirname(output.per_class),
    conda:
        "../envs/simclr.yaml"
    log:
        "logs/probe.log",
    threads: workflow.cores
    shell:
        "simclr probe --features-dir {params.features_dir} --metrics {output.metrics}"
        " --plots-dir {params.plots_dir} --config {params.cfg:q} 2>&1 | tee {log}"
