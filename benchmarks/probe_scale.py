"""The probe stage at scale, before and after the warm-started C path, on real features, in one run.

    python benchmarks/probe_scale.py --root data/cifar10-jpg/cifar10 --before REV [--work DIR] [--only cifar|k200]

Features (made once into --work, from the real CIFAR-10 layout at --root):
  cifar: 50,000 + 10,000 CIFAR-10 images through two full-width ResNet-18s (width 64, 512-d h) left at
         their random initialisation (seeds 0 and 1, in the places of probe's two encoders);
  k200:  a 200-class problem at 100,000 x 512 made of those features: both encoders' train features
         stacked (100,000 rows), each image labelled by its cluster among 200 k-means clusters of its
         8 x 8 pixels (test: 20,000 rows, the nearest centre). Real features, so conditioned as real
         ones are; their L-BFGS iteration counts are printed beside the CIFAR-10 ones to show it.
Then `simclr probe` runs on the CIFAR-10 features with the code of REV (a git worktree) and with this
checkout, in separate processes, timed; metrics, chosen C and L-BFGS iterations side by side. On the
200-class problem one L-BFGS iteration is timed at its full shape (the stage itself, either code, is
hours on 2 cores: --k200-probe runs it anyway). kNN: float32 against
float64 predictions on the CIFAR-10 features, differences counted.
Writes benchmarks/results/probe_scale.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_cifar(root: Path, out: Path) -> None:
    import torch

    from simclr import model as model_lib, runtime as rt
    from simclr.cache import load_split
    from simclr.encoder import features
    from simclr.validate import check

    if (out / "random.npz").exists():
        return
    manifest = check(root).manifest
    splits = {s: load_split(manifest, s, 32) for s in ("train", "test")}
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    out.mkdir(parents=True, exist_ok=True)
    for name, seed in (("simclr", 0), ("random", 1)):
        params = {"model": {"arch": "resnet18", "width": 64, "norm": "batch", "input_size": 32, "proj_dim": 128}}
        enc = model_lib.build(params, seed).encoder.to(memory_format=torch.channels_last)
        arrays = {}
        for split, (images, labels, classes) in splits.items():
            t = time.perf_counter()
            arrays[f"{split}_x"] = features(enc, images, 500, torch.device("cpu"), lambda: rt.autocast(torch.device("cpu"), "bf16"),
                                            True).numpy()
            arrays[f"{split}_y"] = labels.numpy()
            print(f"features {name} {split}: {arrays[f'{split}_x'].shape} in {time.perf_counter() - t:.0f} s", flush=True)
        arrays["classes"] = np.asarray(classes)
        arrays["pixels_train"] = torch.nn.functional.avg_pool2d(splits["train"][0].float(), 4).flatten(1).numpy()
        arrays["pixels_test"] = torch.nn.functional.avg_pool2d(splits["test"][0].float(), 4).flatten(1).numpy()
        np.savez(out / f"{name}.npz", **arrays)


def make_k200(cifar: Path, out: Path) -> None:
    from sklearn.cluster import MiniBatchKMeans

    if (out / "random.npz").exists():
        return
    a, b = np.load(cifar / "simclr.npz"), np.load(cifar / "random.npz")
    km = MiniBatchKMeans(200, random_state=0, n_init=3, batch_size=4096).fit(a["pixels_train"])
    ytr, yte = km.predict(a["pixels_train"]), km.predict(a["pixels_test"])
    both = {
        "train_x": np.concatenate([a["train_x"], b["train_x"]]), "train_y": np.concatenate([ytr, ytr]),
        "test_x": np.concatenate([a["test_x"], b["test_x"]]), "test_y": np.concatenate([yte, yte]),
        "classes": np.asarray([f"c{i}" for i in range(200)]),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, seed in (("simclr", 0), ("random", 1)):  # the two encoders' slots: rows in another order
        perm = np.random.default_rng(seed).permutation(len(both["train_y"]))
        np.savez(out / f"{name}.npz", **{**both, "train_x": both["train_x"][perm], "train_y": both["train_y"][perm]})


def probe_params(work: Path, kind: str) -> Path:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = yaml.safe_load((ROOT / "configs" / "cifar10-cpu.yaml").read_text()).get("probe", {})
    params["probe"].update(preset)
    params["probe"]["embedding"] = "pca"  # the picture is not what is timed
    path = work / f"params-{kind}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_probe(src: Path, features: Path, params: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", "import sys; from simclr.cli import main; sys.exit(main())", "probe", "--features-dir", str(features),
           "--metrics", str(out / "probe.json"), "--plots-dir", str(out / "plots"), "--params", str(params)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"probe failed ({src}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {"seconds": round(seconds, 1), "metrics": json.loads((out / "probe.json").read_text()),
            "log": [line for line in (proc.stdout + proc.stderr).splitlines() if "iterations" in line]}


def iteration_cost(features: Path, params: Path, iterations: int = 5) -> dict:
    """Seconds per L-BFGS iteration of one fit at the problem's full shape, one thread (the earlier
    code's unit of cost: its stage is 2 x (c_num + 1) cold fits of hundreds of iterations each)."""
    import warnings

    import yaml
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    cfg = yaml.safe_load(params.read_text())["probe"]
    f = np.load(features / "simclr.npz")
    xs = StandardScaler().fit_transform(f["train_x"])
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        clf = LogisticRegression(C=0.1, max_iter=iterations).fit(xs, f["train_y"])
        seconds = time.perf_counter() - t
    n, d = xs.shape
    k = len(np.unique(f["train_y"]))
    per = seconds / max(1, int(clf.n_iter_.max()))
    return {"shape": [n, d, k], "seconds_per_iteration": round(per, 3),
            "ns_per_NDK_iteration": round(1e9 * per / (n * d * k), 3), "c_num": cfg["c_num"]}


def knn_agreement(features: Path) -> dict:
    import torch
    import yaml

    from simclr.knn import knn_predict

    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())["probe"]
    out = {}
    for name in ("simclr", "random"):
        f = np.load(features / f"{name}.npz")
        for key, k, t in (("knn_top1", cfg["knn_k"], cfg["knn_t"]), ("knn_vote_top1", cfg["vote_k"], None)):
            t0 = time.perf_counter()
            p64 = knn_predict(f["train_x"].astype(np.float64), f["train_y"], f["test_x"].astype(np.float64), k, t, 10).numpy()
            s64 = time.perf_counter() - t0
            t0 = time.perf_counter()
            p32 = knn_predict(torch.from_numpy(f["train_x"]), f["train_y"], torch.from_numpy(f["test_x"]), k, t, 10).numpy()
            s32 = time.perf_counter() - t0
            diff = np.flatnonzero(p32 != p64)
            out[f"{name} {key}"] = {"differ": int(len(diff)), "rows": diff[:10].tolist(), "float64_s": round(s64, 1),
                                    "float32_s": round(s32, 1), "acc64": float(np.mean(p64 == f["test_y"])),
                                    "acc32": float(np.mean(p32 == f["test_y"]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the CIFAR-10 layout (class.txt, train/, test/)")
    ap.add_argument("--before", default="HEAD")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "simclr-probe-scale")
    ap.add_argument("--only", choices=["cifar", "k200"], action="append")
    ap.add_argument("--k200-probe", action="store_true", help="also run the whole stage on the 200-class problem (hours)")
    args = ap.parse_args()
    work, only = args.work, set(args.only or ["cifar", "k200"])
    work.mkdir(parents=True, exist_ok=True)
    before = work / "before-tree"
    if not before.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True)
    cifar, k200 = work / "cifar", work / "k200"
    make_cifar(args.root, cifar)
    make_k200(cifar, k200)
    result = {"before": args.before, "cores": len(os.sched_getaffinity(0))}
    for kind, feats in (("cifar", cifar), ("k200", k200)):
        if kind not in only:
            continue
        params = probe_params(work, kind)
        result[kind] = {}
        if kind == "k200":
            result[kind]["iteration_cost"] = iteration_cost(feats, params)
            print(f"k200 iteration cost: {result[kind]['iteration_cost']}", flush=True)
            if not args.k200_probe:
                continue
        result[kind]["after"] = run_probe(ROOT / "src", feats, params, work / f"out-{kind}-after")
        print(f"{kind} after: {result[kind]['after']['seconds']} s", flush=True)
        if kind == "cifar":
            import yaml  # the earlier schema has no probe.c_patience: the earlier code is the whole grid
            old = yaml.safe_load(params.read_text())
            old["probe"].pop("c_patience", None)
            old_params = work / "params-before.yaml"
            old_params.write_text(yaml.safe_dump(old))
            result[kind]["before"] = run_probe(before / "src", feats, old_params, work / f"out-{kind}-before")
            print(f"{kind} before: {result[kind]['before']['seconds']} s", flush=True)
    if "cifar" in only:
        result["knn"] = knn_agreement(cifar)
    out = ROOT / "benchmarks" / "results" / "probe_scale.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
