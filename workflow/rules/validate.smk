rule validate:
    input:
        dataset=DATASET,
        code=code("validate"),
    output:
        MANIFEST,
    params:
        cfg=stage_config("validate"),
    conda:
        "../envs/simclr.yaml"
    log:
        f"{LOGS}/validate.log",
    threads: CORES
    shell:
        "simclr validate {input.dataset} --manifest {output} --config {params.cfg:q} 2>&1 | tee {log}"
