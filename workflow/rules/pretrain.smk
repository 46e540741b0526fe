# runtime.gpus > 1: `simclr pretrain` starts itself under torchrun (DDP); the job reserves that many gpus.
rule pretrain:
    input:
        manifest=MANIFEST,
        dataset=DATASET,  # the images the manifest lists
        code=code("pretrain"),
    output:
        model=MODEL,
        metrics=report(
            f"{LIVE}/metrics.json",
            caption="../report/pretrain_metrics.rst",
            category="Pretraining",
        ),
        curves=[
            report(
                f"{LIVE}/plots/metrics/{name}.tsv",
                caption="../report/pretrain_curve.rst",
                category="Pretraining",
                subcategory="Per epoch",
                labels={"metric": name},
            )
            for name in simclr_config.live_metrics(config)
        ],
    params:
        cfg=stage_config("pretrain"),
        live_dir=lambda wildcards, output: os.path.dirname(output.metrics),
        checkpoints=CHECKPOINTS,  # not an output: no job deletes it
    conda:
        "../envs/simclr.yaml"
    log:
        f"{LOGS}/pretrain.log",
    threads: CORES
    resources:
        gpu=config["runtime"]["gpus"],
        simclr_runtime=RUNTIME,
    shell:
        "simclr pretrain --manifest {input.manifest} --model {output.model} --live-dir {params.live_dir}"
        " --checkpoint-dir {params.checkpoints} --config {params.cfg:q} --runtime {resources.simclr_runtime:q}"
        " 2>&1 | tee {log}"
