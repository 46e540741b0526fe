rule prepare:
    output:
        directory(DATASET),
    params:
        cfg=stage_config("prepare"),
    conda:
        "../envs/simclr.yaml"
    log:
        "logs/prepare.log",
    shell:
        "simclr prepare --out {output} --config {params.cfg:q} 2>&1 | tee {log}"
