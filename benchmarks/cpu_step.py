"""The CPU preset's step, setting by setting, against the peer loop (lightly's parts in a DataLoader).

    python benchmarks/cpu_step.py --manifest results/data/manifest.json [--rounds 3] [--steps 8]
        [--no-peer] [--no-compile] [--no-cold] [--no-avx2] [--json benchmarks/results/cpu_step.json]

Each setting runs pretrain's own step (simclr.pretrain.train_step with view_maker's augmentation, the
preset's network, optimiser, channels_last and deterministic kernels) on the real decoded train images,
in one process, alternating setting by setting for --rounds rounds after a warm-up each:

    today          the preset and code before #35: benchmarks/cifar10-cpu-today.yaml's network and stored size
                   (width 16, crops from images stored at 16 px), fp32, eager, deterministic mode filling new
                   tensors with NaN
    fp32           fp32, eager (fill_uninitialized_memory off, as runtime.set_determinism now sets it)
    bf16           bf16 autocast, eager
    fp32+compile   torch.compile of the network and of the augmentation's rendering
    bf16+compile

The peer runs in the same rounds: lightly's SimCLRTransform over torchvision's ImageFolder in a
DataLoader with 2 workers, lightly's head and NTXentLoss, torch SGD, fp32 eager (peer_lightly.py);
each round makes a fresh iterator, skips 6 batches (worker start-up) and times the next --peer-steps.
Images/s counts images (two views each) on both sides. Also: compile's first-run cost with an empty
and with a warm inductor cache (fresh processes), the profiler's top operators for `today` and the
fastest setting (aten::fill_'s share), and fp32 against bf16 with oneDNN and ATen held to AVX2
(ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2: what bf16 costs on a CPU without bf16 units).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from simclr import config, model as model_lib, optim as optim_lib, runtime as rt
from simclr.cache import load_split, stored
from simclr.data import read_manifest
from simclr.pretrain import train_step, view_maker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_time_to_accuracy import TODAY  # noqa: E402  (the preset before #35)

SETTINGS = {"today": ("fp32", False, True), "fp32": ("fp32", False, False), "bf16": ("bf16", False, False),
            "fp32+compile": ("fp32", True, False), "bf16+compile": ("bf16", True, False)}  # precision, compile, fill


class Ours:
    """One setting of the preset's step, with its own network (the same init) and optimiser."""

    def __init__(self, params: dict, name: str, images: torch.Tensor):
        precision, compile_, self.fill = SETTINGS[name]
        self.params = config.merge(params, {"train": {"precision": precision, "compile": compile_}})
        train = self.params["train"]
        self.train, self.images, self.batch = train, images, train["batch_size"]
        self.net = model_lib.build(self.params, train["seed"])
        if train["channels_last"]:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net.train()
        self.step_net = torch.compile(self.net) if compile_ else self.net
        self.opt = optim_lib.build(self.net, self.params["optim"], self.batch)
        self.lr = optim_lib.peak_lr(self.params["optim"], self.batch)
        self.views = view_maker(self.params, torch.Generator().manual_seed(0))
        self.order = torch.Generator().manual_seed(1)

    def step(self) -> None:
        torch.utils.deterministic.fill_uninitialized_memory = self.fill
        pick = torch.randint(0, len(self.images), (self.batch,), generator=self.order)
        train_step(self.step_net, self.opt, self.images[pick], self.lr, self.train, self.batch, self.views)

    def images_per_s(self, steps: int) -> float:
        self.step()  # a warm-up step per round
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * self.batch / (time.perf_counter() - start)


class Peer:
    def __init__(self, params: dict, root: Path, seed: int = 0):
        import peer_lightly

        self.model, self.step_fn, self.r = peer_lightly.build(params, seed)
        self.model.train()
        self.root, self.seed, self.make_loader = root, seed, peer_lightly.loader

    def images_per_s(self, steps: int, skip: int = 6) -> float:
        torch.utils.deterministic.fill_uninitialized_memory = False
        it = iter(self.make_loader(self.root, self.r, workers=2, seed=self.seed))
        for _ in range(skip):
            self.step_fn(next(it)[0])
        start = time.perf_counter()
        for _ in range(steps):
            self.step_fn(next(it)[0])
        seconds = time.perf_counter() - start
        del it
        return steps * self.r["batch"] / seconds


def first_step_seconds(args, name: str, cache: Path) -> float:
    """A fresh process: set-up + one step of `name`, with inductor's cache in `cache`."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, __file__, "--manifest", args.manifest, "--params-file", args.params_file,
                          "--first-step", name], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["first_step_s"]


def top_ops(runner: Ours, steps: int = 3) -> list[dict]:
    runner.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            runner.step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    return [{"op": e.key, "self_share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
            for e in rows[:8]]


def load(args) -> tuple[dict, torch.Tensor]:
    params = config.load_params(args.params_file)
    rt.set_up(params["runtime"], params["train"]["deterministic"], 0)
    return params, train_images(args.manifest, params)


def train_images(manifest: str, params: dict) -> torch.Tensor:
    size, crop = stored(params["model"])  # as pretrain's feed stores them (model.stored_size, else input_size)
    return load_split(read_manifest(manifest), "train", size, crop)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="the dataset manifest from validate (real CIFAR-10)")
    ap.add_argument("--preset", default=str(ROOT / "configs" / "cifar10-cpu.yaml"), help="laid over params.yaml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per setting and round")
    ap.add_argument("--peer-steps", type=int, default=24, help="timed peer batches per round")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-cold", action="store_true", help="skip compile's first-run cost (fresh processes)")
    ap.add_argument("--no-avx2", action="store_true", help="skip the AVX2-only fp32/bf16 comparison")
    ap.add_argument("--settings", default=None, help="comma-separated subset of " + ", ".join(SETTINGS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--params-file", default=None, help=argparse.SUPPRESS)  # the merged params (subprocesses)
    ap.add_argument("--first-step", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.params_file is None:
        merged = config.load_params(ROOT / "params.yaml", args.preset)
        args.params_file = str(Path(tempfile.mkdtemp()) / "params.yaml")
        Path(args.params_file).write_text(json.dumps(merged))  # JSON is YAML
    if args.first_step:
        start = time.perf_counter()
        params, images = load(args)
        Ours(params, args.first_step, images).step()
        print(json.dumps({"first_step_s": time.perf_counter() - start}))
        return 0
    params, images = load(args)
    names = args.settings.split(",") if args.settings else [
        n for n in SETTINGS if not (args.no_compile and SETTINGS[n][1])]
    today = config.load_params(ROOT / "params.yaml", TODAY)
    runners = {n: Ours(today, n, train_images(args.manifest, today)) if n == "today" else Ours(params, n, images)
               for n in names}
    peer = None if args.no_peer else Peer(params, Path(read_manifest(args.manifest)["root"]))
    speeds: dict[str, list[float]] = {n: [] for n in [*names, *(["peer"] if peer else [])]}
    for runner in runners.values():  # compiles here, outside the timed rounds
        runner.step()
    for r in range(args.rounds):
        for n, runner in runners.items():
            speeds[n].append(runner.images_per_s(args.steps))
        if peer:
            speeds["peer"].append(peer.images_per_s(args.peer_steps))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in speeds.items()) + " images/s", flush=True)
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "batch": params["train"]["batch_size"],
              "bf16_units": rt.cpu_bf16_units(), "images_per_s": speeds}
    ref = statistics.median(speeds["today"]) if "today" in speeds else None
    lines = ["| setting | images/s (rounds) | ms per step | x today | x peer |", "| --- | --- | --- | --- | --- |"]
    for n, v in speeds.items():
        med = statistics.median(v)
        lines.append(f"| {n} | {min(v):,.0f}-{max(v):,.0f} | {1000 * params['train']['batch_size'] / med:.0f} | "
                     f"{med / ref:.2f} | " if ref else f"| {n} | {min(v):,.0f}-{max(v):,.0f} | - | - | ")
        lines[-1] += f"{med / statistics.median(speeds['peer']):.2f} |" if peer else "- |"
    if not args.no_cold and not args.no_compile:
        cost = {}
        for n in (m for m in names if SETTINGS[m][1]):
            with tempfile.TemporaryDirectory() as cache:
                cold = first_step_seconds(args, n, Path(cache))
                warm = first_step_seconds(args, n, Path(cache))
            eager = first_step_seconds(args, n.replace("+compile", ""), Path(tempfile.mkdtemp()))
            cost[n] = {"empty_cache_s": cold, "warm_cache_s": warm, "eager_first_step_s": eager}
            lines.append(f"\n{n}: set-up + first step {cold:.1f} s with an empty inductor cache, {warm:.1f} s with "
                         f"a warm one (eager: {eager:.1f} s)")
        result["compile_first_step"] = cost
    fastest = max(names, key=lambda n: statistics.median(speeds[n]))
    result["profile"] = {n: top_ops(runners[n]) for n in dict.fromkeys(["today", fastest]) if n in runners}
    for n, rows in result["profile"].items():
        lines.append(f"\nprofile of {n}, top operators by CPU self time (3 steps):")
        lines += [f"  {row['op']:<40} {100 * row['self_share']:5.1f}%  {row['calls_per_step']:6.0f} calls/step"
                  for row in rows]
    if not args.no_avx2:
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
        out = subprocess.run([sys.executable, __file__, "--manifest", args.manifest, "--params-file", args.params_file,
                              "--settings", "fp32,bf16", "--rounds", "2", "--steps", "3", "--no-peer", "--no-avx2"],
                             env=env, capture_output=True, text=True, check=True)
        result["avx2_only"] = out.stdout.strip().splitlines()[-1]
        lines.append(f"\nwith oneDNN and ATen held to AVX2 (no bf16 units): {result['avx2_only']}")
    print("\n".join(lines))
    if args.settings and set(names) == {"fp32", "bf16"}:
        print(f"fp32 {statistics.median(speeds['fp32']):,.0f}, bf16 {statistics.median(speeds['bf16']):,.0f} "
              f"images/s: bf16 / fp32 {statistics.median(speeds['bf16']) / statistics.median(speeds['fp32']):.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
