"""Augmented views per second: the batched on-device pipeline against a per-image torchvision pipeline.

    python benchmarks/augment_throughput.py [--root data/digits] [--size 32] [--batch 256] [--device cpu]
                                            [--workers 2] [--manifest M] [--json OUT]

Reference (measured in the same run): torchvision ImageFolder over the layout's train split,
transforms.v2 per image (RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter, p=0.8),
RandomGrayscale) producing two views, DataLoader with --workers processes (one per core is what a
user runs). Ours: the split decoded once into a uint8 tensor (from the pipeline's decode cache when
--manifest is given), both views made in batch by simclr.augment on --device. Same operations, same
parameters. Target: >= 5x on a CPU. Also measured: the same batched views with mask-selected jitter
(the CUDA path), and kornia.augmentation when it is installed.
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from simclr import augment as A
from simclr.cache import load_split
from simclr.data import decode, list_split, read_classes, resolve_root


class TwoViews:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img), self.transform(img)


def reference_pipeline(size: int, cfg: A.AugmentConfig):
    s = cfg.jitter_strength
    return v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(cfg.flip_p),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=cfg.jitter_p),
        v2.RandomGrayscale(cfg.gray_p),
        v2.ToDtype(torch.float32, scale=True),
    ])


def views_per_second_reference(root, size, batch, cfg, passes, workers=2):
    ds = datasets.ImageFolder(str(root / "train"), transform=TwoViews(reference_pipeline(size, cfg)))
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=True,
                        drop_last=True)
    for _ in loader:  # warm the workers up
        break
    start, views = time.perf_counter(), 0
    for _ in range(passes):
        for v1, v2_ in loader:
            views += len(v1) + len(v2_)
    return views / (time.perf_counter() - start)


def train_images(root, size, manifest=None) -> torch.Tensor:
    """The train split as uint8 N x 3 x size x size: the pipeline's decode cache, or decoded here."""
    if manifest:
        return load_split(json.loads(Path(manifest).read_text()), "train", size)[0]
    files, _ = list_split(root, "train", read_classes(root))
    return torch.from_numpy(np.stack([decode(p, size) for p in files])).permute(0, 3, 1, 2).contiguous()


def views_per_second_batched(images, size, batch, cfg, passes, device, gather=None):
    """gather: color_jitter's path (None: the default for the device; False: mask selection)."""
    images = images.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    render = functools.partial(A.render, gather=gather)
    A.two_views(images[:batch], size, cfg, g, render)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, views = time.perf_counter(), 0
    for _ in range(passes):
        order = torch.randperm(len(images), generator=g, device=device)
        for i in range(len(images) // batch):
            v1, v2_ = A.two_views(images[order[i * batch:(i + 1) * batch]], size, cfg, g, render)
            views += len(v1) + len(v2_)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return views / (time.perf_counter() - start)


def views_per_second_kornia(images, size, batch, cfg, passes, device):
    """The strongest batched reference a user would pick instead: kornia.augmentation with the same
    ops and per-sample parameters, two views per image, on the same device (None if not installed)."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    s = cfg.jitter_strength
    aug = torch.nn.Sequential(
        K.RandomResizedCrop((size, size), scale=cfg.crop_scale, ratio=cfg.crop_ratio),
        K.RandomHorizontalFlip(p=cfg.flip_p),
        K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=cfg.jitter_p),
        K.RandomGrayscale(p=cfg.gray_p),
    ).to(device)
    images = images.to(device)
    aug(images[:batch].float().div(255))  # warm-up
    start, views = time.perf_counter(), 0
    for _ in range(passes):
        order = torch.randperm(len(images), device=device)
        for i in range(len(images) // batch):
            x = images[order[i * batch:(i + 1) * batch]].float().div_(255)
            both = aug(torch.cat([x, x]))
            views += len(both)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return views / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/digits", help="dataset in the layout (class.txt, train/, test/)")
    ap.add_argument("--size", type=int, default=32, help="view side in pixels")
    ap.add_argument("--batch", type=int, default=256, help="images per batch (two views each)")
    ap.add_argument("--passes", type=int, default=2, help="timed passes over the train split")
    ap.add_argument("--device", default="cpu", help="where the batched views are made (cpu, cuda)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the reference")
    ap.add_argument("--manifest", default=None, help="take the decoded split from the pipeline's cache")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    root = resolve_root(args.root)
    cfg = A.AugmentConfig()
    ref = views_per_second_reference(root, args.size, args.batch, cfg, args.passes, args.workers)
    print(f"per-image torchvision, DataLoader {args.workers} workers (reference): {ref:9.0f} views/s")
    images = train_images(root, args.size, args.manifest)
    device = torch.device(args.device)
    ours = views_per_second_batched(images, args.size, args.batch, cfg, args.passes, device)
    print(f"batched simclr.augment on {args.device}:{'':22}{ours:9.0f} views/s")
    mask = views_per_second_batched(images, args.size, args.batch, cfg, args.passes, device, gather=False)
    print(f"the same with mask-selected jitter (the CUDA path): {mask:9.0f} views/s")
    kornia = views_per_second_kornia(images, args.size, args.batch, cfg, args.passes, device)
    if kornia is not None:
        print(f"kornia.augmentation, same ops, per-sample params:  {kornia:9.0f} views/s")
    print(f"batched / per-image: {ours / ref:.1f}x (target >= 5x on a CPU); default / mask path: {ours / mask:.2f}x"
          + (f"; batched / kornia: {ours / kornia:.1f}x" if kornia else " (kornia not installed)"))
    if args.json:
        Path(args.json).write_text(json.dumps({"reference_views_per_s": ref, "batched_views_per_s": ours,
                                               "mask_views_per_s": mask, "kornia_views_per_s": kornia,
                                               "ratio": ours / ref, "workers": args.workers,
                                               "device": args.device, "batch": args.batch}))


if __name__ == "__main__":
    main()
