"""Where one epoch of pretraining spends its time: augmentation, forward (with the loss), backward,
optimiser step, as shares of the wall time, plus torch.profiler's top operators.

    python benchmarks/profile_epoch.py --manifest results/data/manifest.json \\
        [--preset configs/cifar10-cpu.yaml] [--steps N] [--out benchmarks/results/profile-cpu]

The step is pretrain's own (simclr.pretrain's view_maker, the model, NT-Xent, the optimiser the preset
builds), cut into its four parts with a synchronisation at each boundary (free on a CPU; on CUDA
each part is synchronised, which costs a little overlap). --steps defaults to one epoch of the
preset. --out gets profile.md (the shares and the top operators) and profile.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from simclr import config, model as model_lib, optim as optim_lib, runtime as rt
from simclr.cache import load_split, stored
from simclr.data import read_manifest
from simclr.losses import nt_xent
from simclr.pretrain import per_class_subset, steps_per_epoch, view_maker

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("augmentation", "forward + loss", "backward", "optimiser")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="the dataset manifest from validate")
    ap.add_argument("--preset", default=str(ROOT / "configs" / "cifar10-cpu.yaml"),
                    help="laid over params.yaml (default: the CPU preset)")
    ap.add_argument("--params", default=None, help="a whole params file instead of params.yaml + --preset")
    ap.add_argument("--steps", type=int, default=None, help="steps to time (default: one epoch)")
    ap.add_argument("--profiled", type=int, default=5, help="steps recorded by torch.profiler")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile-cpu"))
    args = ap.parse_args()
    params = config.load_params(args.params) if args.params else config.load_params(ROOT / "params.yaml", args.preset)
    train, runtime = params["train"], params["runtime"]
    device = rt.set_up(runtime, train["deterministic"], 0)
    size, crop = stored(params["model"])  # as pretrain's feed stores them (model.stored_size, else input_size)
    images, labels, _ = load_split(read_manifest(args.manifest), "train", size, crop)
    images = images[per_class_subset(labels, train["images_per_class"], train["seed"])].to(device)
    batch = min(train["batch_size"], len(images))
    steps = args.steps or steps_per_epoch(len(images), batch)
    net = model_lib.build(params, train["seed"]).to(device)
    fmt = torch.channels_last if train["channels_last"] else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    optimizer = optim_lib.build(net, params["optim"], batch)
    views = view_maker(params, torch.Generator(device=device).manual_seed(0))
    order = torch.randperm(len(images), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(i, spent):
        t0 = time.perf_counter()
        v1, v2 = views(images[order[(i * batch) % (len(images) - batch + 1):][:batch]])
        v1, v2 = v1.contiguous(memory_format=fmt), v2.contiguous(memory_format=fmt)
        sync()
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with rt.autocast(device, train["precision"]):
            if train["forward_views"] == "separate":
                z1, z2 = net(v1), net(v2)
            else:
                z = net(torch.cat([v1, v2]))  # 2N x proj_dim
                z1, z2 = z[:batch], z[batch:]
        loss = nt_xent(z1, z2, train["temperature"])
        sync()
        t2 = time.perf_counter()
        loss.backward()
        sync()
        t3 = time.perf_counter()
        optimizer.step()
        sync()
        t4 = time.perf_counter()
        for part, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[part] += seconds

    warm = {p: 0.0 for p in PARTS}
    step(0, warm)
    spent = {p: 0.0 for p in PARTS}
    start = time.perf_counter()
    for i in range(steps):
        step(i, spent)
    wall = time.perf_counter() - start
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
        for i in range(args.profiled):
            step(i, {p: 0.0 for p in PARTS})
    top = prof.key_averages().table(sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total",
                                    row_limit=15)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [f"| {p} | {spent[p]:.2f} s | {100 * spent[p] / wall:.1f}% |" for p in PARTS]
    other = wall - sum(spent.values())
    md = "\n".join([f"{steps} steps of {Path(args.params or args.preset).name} (batch {batch}, {2 * batch * steps / wall:,.0f} views/s, "
                    f"{torch.get_num_threads()} threads, device {device}, torch {torch.__version__}): {wall:.1f} s", "",
                    "| part | time | share |", "| --- | --- | --- |", *rows,
                    f"| other (data order, loop) | {other:.2f} s | {100 * other / wall:.1f}% |", "",
                    f"torch.profiler, {args.profiled} steps, top operators by self time:", "", "```", top, "```", ""])
    (out / "profile.md").write_text(md)
    (out / "profile.json").write_text(json.dumps({"steps": steps, "batch": batch, "wall_s": wall,
                                                  "parts_s": spent, "threads": torch.get_num_threads()}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
