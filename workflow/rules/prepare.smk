rule prepare:
    input:
        source_files(),
        code("prepare"),
    output:
        directory(DATASET),
    params:
        cfg=stage_config("prepare"),
        listing=folder_listing(),
    conda:
        "../envs/simclr.yaml"
    log:
        f"{LOGS}/prepare.log",
    shell:
        "simclr prepare --out {output} --config {params.cfg:q} 2>&1 | tee {log}"
