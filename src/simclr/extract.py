"""Stage `extract`: frozen encoder features (before the head), no augmentation, for train and test.

Writes features/simclr.npz from the pretrained encoder and features/random.npz from an encoder of
the same architecture and seed left at its random initialisation (the baseline).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import io, model as model_lib
from .data import SPLITS, load_split
from .pretrain import autocast, pick_device, set_threads


@torch.no_grad()
def features(encoder: torch.nn.Module, images: torch.Tensor, batch_size: int, device, precision: str,
             channels_last: bool = False) -> np.ndarray:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    encoder = encoder.eval().to(memory_format=fmt)
    out = []
    for a in range(0, len(images), batch_size):
        x = images[a:a + batch_size].to(device).float().div_(255).contiguous(memory_format=fmt)
        with autocast(device, precision):
            out.append(encoder(x).float().cpu())  # h: n x feature_dim
    return torch.cat(out).numpy()


def extract(params: dict, manifest_path: Path, model_path: Path, out_dir: Path, log=print) -> None:
    manifest = json.loads(Path(manifest_path).read_text())
    device = pick_device(params["train"]["device"])
    set_threads(params["train"]["threads"])
    checkpoint = torch.load(model_path, map_location="cpu", weights_only=False)
    if checkpoint["manifest_hash"] != manifest["content_hash"]:
        raise ValueError(f"{model_path}: trained on dataset {checkpoint['manifest_hash'][:12]}, "
                         f"but {manifest_path} describes {manifest['content_hash'][:12]}; rerun pretrain")
    trained = model_lib.build(params, params["train"]["seed"])
    random_init = model_lib.build(params, params["train"]["seed"])
    trained.load_state_dict(checkpoint["model"])
    size = params["model"]["input_size"]
    cfg = params["extract"]
    splits = {split: load_split(manifest, split, size) for split in SPLITS}
    for name, net in (("simclr", trained), ("random", random_init)):
        encoder = net.encoder.to(device)
        arrays = {}
        for split, (images, labels, classes) in splits.items():
            arrays[f"{split}_x"] = features(encoder, images, cfg["batch_size"], device, cfg["precision"],
                                                 cfg["channels_last"])
            arrays[f"{split}_y"] = labels.numpy()
        arrays["classes"] = np.asarray(classes)
        io.save_npz(Path(out_dir) / f"{name}.npz", **arrays)
        log(f"extract: {name}: train {arrays['train_x'].shape}, test {arrays['test_x'].shape}")
