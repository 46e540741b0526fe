"""Driver of benchmarks/cifar10_gpu.sh: the pipeline's own CLI stages on DATA_ROOT, timed, then one table."""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def subset(src: Path, dest: Path, per_class: int) -> Path:
    """The first per_class images of each class and split of src, copied into dest."""
    from simclr.data import SPLITS, is_litter, read_classes

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "class.txt", dest / "class.txt")
    for split in SPLITS:
        for name in read_classes(src):
            (dest / split / name).mkdir(parents=True, exist_ok=True)
            files = sorted(p for p in (src / split / name).iterdir() if not is_litter(p.name))[:per_class]
            for p in files:
                shutil.copy(p, dest / split / name / p.name)
    return dest


def stage(name: str, args: list[str], times: dict) -> None:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "simclr", name, *args], text=True)
    times[name] = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: simclr {name} failed (exit {proc.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description="SimCLR on real CIFAR-10 in about ten minutes on one GPU")
    ap.add_argument("data_root", type=Path)
    ap.add_argument("--preset", type=Path, default=ROOT / "configs" / "cifar10-resnet18-short.yaml")
    ap.add_argument("--limit-per-class", type=int, default=None, help="use only N images per class and split")
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's train.epochs")
    ap.add_argument("--device", default=None, help="override train.device (auto, cpu, cuda)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a param, e.g. --set train.compile=false (YAML value; repeatable)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "cifar10_gpu", help="outputs go here")
    args = ap.parse_args()

    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    params = yaml.safe_load(args.preset.read_text())
    data_root = args.data_root
    if args.limit_per_class:
        data_root = subset(args.data_root, work / "subset", args.limit_per_class)
    params["data"].update(source="folder", folder=str(data_root))
    if args.epochs:
        params["train"]["epochs"] = args.epochs
    if args.device:
        params["train"]["device"] = args.device
    for item in args.set:
        key, _, value = item.partition("=")
        section, name = key.split(".", 1)
        params[section][name] = yaml.safe_load(value)
    p = work / "params.yaml"
    p.write_text(yaml.safe_dump(params, sort_keys=False))

    times: dict[str, float] = {}
    common = ["--params", str(p)]
    stage("validate", [str(data_root), "--manifest", str(work / "manifest.json"), *common], times)
    stage("pretrain", ["--manifest", str(work / "manifest.json"), "--model", str(work / "simclr.pt"),
                       "--live-dir", str(work / "live"), "--checkpoint-dir", str(work / "checkpoints"), *common], times)
    stage("extract", ["--manifest", str(work / "manifest.json"), "--model", str(work / "simclr.pt"),
                      "--out-dir", str(work / "features"), *common], times)
    stage("probe", ["--features-dir", str(work / "features"), "--metrics", str(work / "probe.json"),
                    "--plots-dir", str(work / "plots"), *common], times)

    live = work / "live" / "plots" / "metrics"
    rows = list(csv.DictReader((live / "views_per_s.tsv").open(), delimiter="\t"))
    peaks = list(csv.DictReader((live / "gpu_peak_mib.tsv").open(), delimiter="\t"))
    metrics = json.loads((work / "probe.json").read_text())
    shots = params["probe"]["shots"]
    views = sum(float(r["views_per_s"]) for r in rows) / len(rows)
    peak = max(float(r["gpu_peak_mib"]) for r in peaks)
    s, r = metrics["simclr"], metrics["random"]
    table = [
        ("preset", args.preset.name), ("data", f"{data_root}"), ("epochs", len(rows)),
        *[(f"time {k}", f"{v:.1f} s") for k, v in times.items()],
        ("time total", f"{sum(times.values()):.1f} s"),
        ("views/s (pretrain, mean)", f"{views:.0f}"), ("peak GPU memory", f"{peak:.0f} MiB" if peak else "n/a (CPU)"),
        ("linear top-1 (simclr / random)", f"{s['linear_top1']:.4f} / {r['linear_top1']:.4f}"),
        ("kNN top-1 (simclr / random)", f"{s['knn_top1']:.4f} / {r['knn_top1']:.4f}"),
        (f"{shots}-shot top-1 (simclr / random)", f"{s[f'fewshot_{shots}_top1']:.4f} / {r[f'fewshot_{shots}_top1']:.4f}"),
    ]
    width = max(len(k) for k, _ in table)
    print("\n" + "\n".join(f"| {k:<{width}} | {v} |" for k, v in table))


if __name__ == "__main__":
    main()
