rule validate:
    input:
        DATASET,
    output:
        MANIFEST,
    params:
        cfg=stage_config("validate"),
    conda:
        "../envs/simclr.yaml"
    log:
        "logs/validate.log",
    threads: CORES
    shell:
        "simclr validate {input} --manifest {output} --config {params.cfg:q} 2>&1 | tee {log}"
