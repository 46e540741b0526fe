# One process per GPU: train.gpus > 1 runs pretrain under torchrun (DDP) and reserves that many gpus.
GPUS = config["train"]["gpus"]
LIVE = "metrics/pretrain"


rule pretrain:
    input:
        manifest=MANIFEST,
    output:
        model="models/simclr.pt",
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
        launch="simclr" if GPUS == 1 else f"torchrun --standalone --nproc_per_node={GPUS} -m simclr",
        live_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    conda:
        "../envs/simclr.yaml"
    log:
        "logs/pretrain.log",
    threads: CORES
    resources:
        gpu=GPUS,
    shell:
        "{params.launch} pretrain --manifest {input.manifest} --model {output.model} --live-dir {params.live_dir}"
        " --config {params.cfg:q} 2>&1 | tee {log}"
