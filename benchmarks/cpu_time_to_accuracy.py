"""Time to accuracy on a CPU: the kNN a fixed pretraining wall time buys, the CPU preset against the peer loop.

    python benchmarks/cpu_time_to_accuracy.py --manifest results/data/manifest.json \\
        [--seeds 0,1] [--budget-s S] [--sides today,preset,peer] [--preset-epochs N] [--set KEY=VALUE] [--match]
        [--json benchmarks/results/cpu_time_to_accuracy.json]

Sides, each run once per seed on the real train split (all 50,000 images) and scored the same way:

    today   the CPU preset as it was before #35 (benchmarks/cifar10-cpu-today.yaml: fp32, 5 epochs,
            temperature 0.5, width 16, crops from images stored at 16 px; deterministic mode filling new
            tensors with NaN); its mean pretraining wall time is the budget, unless --budget-s
    preset  configs/cifar10-cpu.yaml as it is now, run by simclr.pretrain.pretrain (its epochs are fixed
            in the preset; its wall time is reported beside the budget)
    peer    the plain PyTorch loop a user writes with lightly's parts (peer_lightly.py: SimCLRTransform
            over ImageFolder, a DataLoader with 2 workers, SimCLRProjectionHead, NTXentLoss, SGD, fp32
            eager), the same network and recipe; its cosine schedule runs on the clock (lr at elapsed
            time t of budget T: peak x (1 + cos(pi t / T)) / 2), and it stops at the budget; with
            --match, its budget is the preset's measured time of the same seed, run just before it

--set KEY=VALUE changes the recipe of the preset and the peer alike (today stays today's).

Score: the encoder's h of the un-augmented train and test images (the 32 px images resized to the 16 px input),
fp32, and the probe's kNN on all 10,000 test images: k=10 majority vote and k=200 weighted (probe.knn_both).
Pretraining wall time counts from the call to the first step's data to the last update (model set-up
and data loading included; scoring excluded).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from simclr import config, runtime as rt
from simclr.cache import load_split
from simclr.data import read_manifest
from simclr.encoder import features, load_trained
from simclr.io import write_json
from simclr.pretrain import pretrain
from simclr.probe import knn_both

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
TODAY = ROOT / "benchmarks" / "cifar10-cpu-today.yaml"  # configs/cifar10-cpu.yaml before #35


def score(encoder, params: dict, splits: dict) -> dict:
    device = torch.device("cpu")
    f = {name: features(encoder, images, 512, device, lambda: rt.autocast(device, "fp32"), True).numpy()
         for name, (images, _, _) in splits.items()}
    (_, ytr, classes), (_, yte, _) = splits["train"], splits["test"]
    knn, vote = knn_both(f["train"], ytr.numpy(), f["test"], params["probe"], len(classes), device)
    return {"knn_vote_top1": float((vote == yte.numpy()).mean()), "knn_top1": float((knn == yte.numpy()).mean())}


def run_ours(params: dict, manifest: Path, fill: bool, work: Path) -> tuple[float, object, str]:
    set_determinism = rt.set_determinism

    def with_fill(on, device):  # `today`: the old deterministic mode, new tensors filled with NaN
        set_determinism(on, device)
        torch.utils.deterministic.fill_uninitialized_memory = on and fill

    rt.set_determinism = with_fill
    try:
        start = time.perf_counter()
        pretrain(params, manifest, work / "model.pt", work / "live", work / "ckpt", log=lambda m: None)
        seconds = time.perf_counter() - start
    finally:
        rt.set_determinism = set_determinism
    net, checkpoint = load_trained(work / "model.pt")
    return seconds, net.encoder, checkpoint["params"]["train"]["precision"]  # what auto resolved to


def run_peer(params: dict, root: Path, seed: int, budget: float) -> tuple[float, int, object]:
    import peer_lightly

    rt.set_up(params["runtime"], params["train"]["deterministic"], 0)
    start = time.perf_counter()
    model, step, r = peer_lightly.build(params, seed)
    model.train()
    done = 0
    while True:
        for views, _ in peer_lightly.loader(root, r, workers=2, seed=seed * 1000 + done):
            elapsed = time.perf_counter() - start
            if elapsed >= budget:
                return elapsed, done, model.encoder
            step(views, peer_lightly.cosine(elapsed, budget, r["lr"]))  # the cosine runs on the clock
            done += 1


def overrides(args) -> dict:
    """--preset-epochs and --set KEY=VALUE as a nested dict (values parsed as YAML)."""
    import yaml

    out: dict = {"train": {"epochs": args.preset_epochs}} if args.preset_epochs else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key.count(".") != 1:
            raise SystemExit(f"--set: expected SECTION.KEY=VALUE, found {item!r}")
        section, name = key.split(".")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def summary(rows: dict[str, list[dict]], budget: float | None) -> list[str]:
    """The table of the sides run, and the preset's worst k=10 vote minus the peer's best. With --match
    and no `today`, there is no one budget: each peer ran for its seed's preset time (budget None)."""
    head = (f"pretraining budget {budget:.0f} s" if budget is not None
            else "pretraining budget: each seed's preset time (--match)")
    lines = [f"{head} on {torch.get_num_threads()} threads, torch {torch.__version__}", "",
             "| side | pretraining s | schedule | kNN k=10 vote (seeds) | kNN k=200 (seeds) |",
             "| --- | --- | --- | --- | --- |"]
    for side, rs in rows.items():
        sched = (f"{rs[0]['steps']}-{rs[-1]['steps']} steps" if side == "peer"
                 else f"{rs[0]['epochs']} epochs, {rs[0]['precision']}")
        seconds = ", ".join(f"{r['pretrain_s']:.0f}" for r in rs)
        vote = ", ".join(f"{100 * r['knn_vote_top1']:.2f}" for r in rs)
        knn = ", ".join(f"{100 * r['knn_top1']:.2f}" for r in rs)
        lines.append(f"| {side} | {seconds} | {sched} | {vote} | {knn} |")
    if "preset" in rows and "peer" in rows:
        lo = min(r["knn_vote_top1"] for r in rows["preset"])
        hi = max(r["knn_vote_top1"] for r in rows["peer"])
        lines.append(f"\npreset's worst kNN k=10 vote minus the peer's best: {100 * (lo - hi):+.2f} points")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="the dataset manifest from validate (real CIFAR-10)")
    ap.add_argument("--preset", default=str(ROOT / "configs" / "cifar10-cpu.yaml"), help="laid over params.yaml")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--sides", default="today,preset,peer")
    ap.add_argument("--budget-s", type=float, default=None, help="pretraining budget (default: today's mean time)")
    ap.add_argument("--preset-epochs", type=int, default=None,
                    help="the preset side's train.epochs (default: the preset's; for budgets other than today's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the preset side (e.g. train.temperature=0.2; repeatable)")
    ap.add_argument("--match", action="store_true",
                    help="give the peer of each seed the preset's measured time of that seed, run just before")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    seeds, sides = [int(s) for s in args.seeds.split(",")], args.sides.split(",")
    if args.budget_s is None and "today" not in sides and not (args.match and "preset" in sides):
        raise SystemExit("--budget-s: expected a budget in seconds when the side `today` (which sets it) is not run")
    preset = config.load_params(ROOT / "params.yaml", args.preset)
    today = config.load_params(ROOT / "params.yaml", TODAY)
    manifest = Path(args.manifest)
    m = read_manifest(manifest)
    splits = {s: load_split(m, s, preset["model"]["input_size"]) for s in ("train", "test")}
    rows: dict[str, list[dict]] = {}
    budget = args.budget_s
    def run(side: str, seed: int, budget: float | None) -> dict:
        if side == "today":
            params = config.merge(today, {"train": {"seed": seed}})
        else:  # the preset and the peer take the same recipe, --set included
            params = config.merge(preset, {"train": {"seed": seed}})
            params = config.validate_params(config.merge(params, overrides(args)), "--set")
        with tempfile.TemporaryDirectory() as work:
            if side == "peer":
                seconds, steps, encoder = run_peer(params, Path(m["root"]), seed, budget)
                extra = {"steps": steps, "budget_s": budget}
            else:
                seconds, encoder, precision = run_ours(params, manifest, side == "today", Path(work))
                extra = {"epochs": params["train"]["epochs"], "precision": precision}
            row = {"seed": seed, "pretrain_s": seconds, **extra, **score(encoder, params, splits)}
        rows.setdefault(side, []).append(row)
        print(f"{side} seed {seed}: {json.dumps(row)}", flush=True)
        return row

    if "today" in sides:
        for seed in seeds:
            run("today", seed, None)
        if budget is None:
            budget = statistics.mean(r["pretrain_s"] for r in rows["today"])
            print(f"budget: {budget:.1f} s (today's mean pretraining time)", flush=True)
    for seed in seeds:  # the preset and the peer of a seed back to back: the same state of the machine
        ours = run("preset", seed, None) if "preset" in sides else None
        if "peer" in sides:
            run("peer", seed, ours["pretrain_s"] if args.match and ours else budget)
    if args.json:  # the measured rows first: a run of an hour is not lost to its summary
        write_json(args.json, {"budget_s": budget, "rows": rows})
    print("\n".join(summary(rows, budget)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
