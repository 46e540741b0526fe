"""Pretraining step overhead: the full step against model-only forward/backward on pre-made views.

    python benchmarks/step_overhead.py [--batch 64] [--size 32] [--steps 3] [--device cpu|cuda] [--precision fp32|bf16]
                                       [--channels-last] [--json OUT]

Full step = batched augmentation of two views from uint8 images + forward/backward of both views +
NT-Xent + LARS step. Reference (same run, same model and batch): forward/backward + NT-Xent on views
made beforehand. Prints throughput of both and the ratio full/reference (target >= 0.90).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from simclr import augment as A
from simclr import optim as O
from simclr.model import SimCLR
from simclr.accumulate import step_gradients
from simclr.pretrain import train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 base width (model.width; 64 = standard)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = SimCLR("resnet18", width=args.width).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = O.build(net, {"name": "lars", "base_lr": 1.0, "weight_decay": 1e-6, "momentum": 0.9,
                        "trust_coefficient": 0.001}, args.batch)
    images = torch.randint(0, 256, (args.batch * args.steps, 3, args.size, args.size), dtype=torch.uint8, device=device)
    cfg = A.AugmentConfig()
    g = torch.Generator(device=device).manual_seed(0)
    premade = [A.two_views(images[i * args.batch:(i + 1) * args.batch], args.size, cfg, g) for i in range(args.steps)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def model_only(i):
        v1, v2 = premade[i]
        net.zero_grad(set_to_none=True)
        step_gradients(net, v1.contiguous(memory_format=fmt), v2.contiguous(memory_format=fmt), 0.5,
                       args.batch, "naive", args.precision)

    train = {"channels_last": args.channels_last, "temperature": 0.5, "accumulate": "naive",
             "precision": args.precision, "forward_views": "joint"}  # every key train_step reads
    lr = opt.param_groups[0]["lr"]

    def full(i):  # the step pretrain runs
        train_step(net, opt, images[i * args.batch:(i + 1) * args.batch], lr, train, args.batch,
                   lambda x: A.two_views(x, args.size, cfg, g))

    results = {}
    for name, fn in (("model-only fwd/bwd (reference)", model_only), ("full step", full)):
        fn(0)  # warm-up
        sync()
        start = time.perf_counter()
        for i in range(args.steps):
            fn(i)
        sync()
        results[name] = 2 * args.batch * args.steps / (time.perf_counter() - start)
        print(f"{name:>32}: {results[name]:9.1f} views/s")
    ref, ours = results.values()
    print(f"full / model-only: {ours / ref:.3f} (target >= 0.90; overhead {100 * (1 - ours / ref):.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"model_only_views_per_s": ref, "full_step_views_per_s": ours,
                                               "ratio": ours / ref, "batch": args.batch, "device": args.device,
                                               "precision": args.precision, "channels_last": args.channels_last}))


if __name__ == "__main__":
    main()
