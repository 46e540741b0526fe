rule pretrain:
    input:
        manifest=MANIFEST,
    output:
        model="models/simclr.pt",
        log="metrics/train_log.csv",
    params:
        cfg=stage_config("pretrain"),
    conda:
        "../envs/simclr.yaml"
    log:
        "logs/pretrain.log",
    threads: workflow.cores
    resources:
        gpu=1,
    shell:
        "simclr pretrain --manifest {input.manifest} --model {output.model} --log {output.log}"
        " --config {params.cfg:q} 2>&1 | tee {log}"
