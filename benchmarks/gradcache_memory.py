"""Exact large-batch gradients (gradient caching) against the direct full-batch step: peak memory and time.

    python benchmarks/gradcache_memory.py [--batch 512] [--chunk 64] [--size 32] [--device cpu|cuda]
                                          [--precision fp32|bf16] [--channels-last] [--json OUT]

Each mode runs in its own process (one warm-up step, then one timed step) so that peak memory is
its own: peak RSS on CPU, torch.cuda.max_memory_allocated on CUDA. Prints both and the ratios
exact/direct (targets: memory <= 0.35x, time <= 1.5x; theory ~1.33x: one extra forward).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def one(mode: str, batch: int, chunk: int, size: int, device: str, precision: str = "fp32",
        channels_last: bool = False, width: int = 64) -> dict:
    import torch

    from simclr.model import SimCLR
    from simclr.accumulate import step_gradients

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = SimCLR("resnet18", width=width).to(device).to(memory_format=fmt).train()
    v1 = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    v2 = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    chunk_size = batch if mode == "direct" else chunk
    times = []
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step_gradients(net, v1, v2, 0.5, chunk_size, "exact", precision)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    return {"mode": mode, "seconds": times[-1], "peak_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 base width (model.width; 64 = standard)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.batch, args.chunk, args.size, args.device, args.precision,
                             args.channels_last, args.width)))
        return
    rows = {}
    for mode in ("direct", "exact"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--batch", str(args.batch),
                              "--chunk", str(args.chunk), "--size", str(args.size), "--device", args.device,
                              "--precision", args.precision, "--width", str(args.width),
                              *(["--channels-last"] if args.channels_last else [])],
                             capture_output=True, text=True, check=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
        r = rows[mode]
        label = f"batch {args.batch}" + ("" if mode == "direct" else f", chunks of {args.chunk}")
        print(f"{mode:>6} ({label}): step {r['seconds']:7.2f}s  peak {r['peak_mib']:8.0f} MiB")
    d, e = rows["direct"], rows["exact"]
    print(f"exact/direct: memory {e['peak_mib'] / d['peak_mib']:.2f}x (target <= 0.35), "
          f"time {e['seconds'] / d['seconds']:.2f}x (target <= 1.5)")
    if args.json:
        Path(args.json).write_text(json.dumps({"direct": d, "exact": e, "batch": args.batch, "chunk": args.chunk,
                                               "memory_ratio": e["peak_mib"] / d["peak_mib"],
                                               "time_ratio": e["seconds"] / d["seconds"]}))


if __name__ == "__main__":
    main()
