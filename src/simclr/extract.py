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
        if cfg["channels_last"]:
            encoder = encoder.to(memory_format=torch.channels_last)
        arrays = {}
        for split, (images, labels, classes) in splits.items():
            arrays[f"{split}_x"] = model_lib.features(
                encoder, images, cfg["batch_size"], device, lambda: autocast(device, cfg["precision"]),
                cfg["channels_last"], desc=f"extract: {name} {split}", log=log).cpu().numpy()
            arrays[f"{split}_y"] = labels.numpy()
        arrays["classes"] = np.asarray(classes)
        io.save_npz(Path(out_dir) / f"{name}.npz", **arrays)
        log(f"extract: {name}: train {arrays['train_x'].shape}, test {arrays['test_x'].shape}")
