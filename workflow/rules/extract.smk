rule extract:
    input:
        manifest=MANIFEST,
        model="models/simclr.pt",
    output:
        simclr="features/simclr.npz",
        random="features/random.npz",
    params:
        cfg=stage_config("extract"),
        out_dir=lambda wildcards, output: os.path.dirname(output.simclr),
    conda:
        "../envs/simclr.yaml"
    log:
        "logs/extract.log",
    threads: CORES
    resources:
        gpu=1,
    shell:
        "simclr extract --manifest {input.manifest} --model {input.model} --out-dir {params.out_dir}"
        " --config {params.cfg:q} 2>&1 | tee {log}"
