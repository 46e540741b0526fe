rule extract:
    input:
        manifest=MANIFEST,
        dataset=DATASET,  # the images the manifest lists
        model=MODEL,
        code=code("extract"),
    output:
        simclr=f"{FEATURES}/simclr.npz",
        random=f"{FEATURES}/random.npz",
    params:
        cfg=stage_config("extract"),
        out_dir=lambda wildcards, output: os.path.dirname(output.simclr),
    conda:
        "../envs/simclr.yaml"
    log:
        f"{LOGS}/extract.log",
    threads: CORES
    resources:
        gpu=1,
        simclr_runtime=RUNTIME,
    shell:
        "simclr extract --manifest {input.manifest} --model {input.model} --out-dir {params.out_dir}"
        " --config {params.cfg:q} --runtime {resources.simclr_runtime:q} 2>&1 | tee {log}"
