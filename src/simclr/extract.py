"""Stage `extract`: frozen encoder features (before the head), no augmentation, for train and test.

    simclr extract --manifest data/manifest.json --model models/simclr.pt --out-dir features

Writes features/simclr.npz from the pretrained encoder and features/random.npz from an encoder of
the same architecture and seed left at its random initialisation (the baseline). The architecture,
input size and seed come from the model file itself (the params it was trained with), so extract
cannot build a model other than the one it loads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import io, model as model_lib, runtime as rt
from .encoder import features, load_trained
from .cache import load_split, stored
from .data import SPLITS, read_manifest
from .errors import UserError


def extract(params: dict, manifest_path: Path, model_path: Path, out_dir: Path, log=print) -> None:
    """`params` holds the extract section and runtime."""
    manifest = read_manifest(manifest_path)
    trained, checkpoint = load_trained(Path(model_path))
    if checkpoint["manifest_hash"] != manifest["content_hash"]:
        raise UserError(f"{model_path}: trained on dataset {checkpoint['manifest_hash'][:12]}, "
                        f"but {manifest_path} describes {manifest['content_hash'][:12]}; rerun pretrain")
    trained_with = checkpoint["params"]
    device = rt.set_up(params["runtime"])
    params = rt.with_precision(params, "extract", device, log)
    random_init = model_lib.build(trained_with, trained_with["train"]["seed"])  # the same draw, left untrained
    cfg = params["extract"]
    splits = {split: load_split(manifest, split, *stored(trained_with["model"])) for split in SPLITS}  # mapped
    for name, net in (("simclr", trained), ("random", random_init)):
        encoder = net.encoder.to(device)
        if cfg["channels_last"]:
            encoder = encoder.to(memory_format=torch.channels_last)
        run = torch.compile(encoder) if cfg["compile"] else encoder
        arrays = {}
        for split, (images, labels, classes) in splits.items():
            arrays[f"{split}_x"] = features(
                run, images, cfg["batch_size"], device, lambda: rt.autocast(device, cfg["precision"]),
                cfg["channels_last"], desc=f"extract: {name} {split}", log=log,
                size=trained_with["model"]["input_size"]).cpu().numpy()
            arrays[f"{split}_y"] = labels.numpy()
        arrays["classes"] = np.asarray(classes)
        io.save_npz(Path(out_dir) / f"{name}.npz", **arrays)
        log(f"extract: {name}: train {arrays['train_x'].shape}, test {arrays['test_x'].shape}")
