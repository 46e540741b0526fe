"""Take the trained encoder away: `from simclr import load_encoder`.

    from simclr import load_encoder
    encoder = load_encoder("models/simclr.pt")          # eval mode; h = encoder(x), before the head
    x = encoder.preprocess(images)                      # uint8 N x 3 x H x W -> float, resized, in [0, 1]
    h = encoder(x)                                      # N x encoder.info["feature_dim"]

The model file holds plain tensors and plain Python (no pickled classes), so it also loads with
`torch.load(path, weights_only=True)`; the encoder's weights are its `model` entries that start
with `encoder.` (torchvision ResNet names, CIFAR stem).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import model as model_lib

# How pretrain and extract feed images: no mean/std normalisation, pixels scaled to [0, 1].
PIXELS = "RGB uint8 / 255, no mean/std normalisation; resized to input_size x input_size by PIL bilinear"


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 RGB images (N x 3 x H x W) as the encoder saw its data: resized to size x size the way
    data.decode resizes on load (PIL bilinear, only when the size differs), scaled to [0, 1]."""
    from PIL import Image

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected uint8 N x 3 x H x W, found {images.dtype} {tuple(images.shape)}")
    if images.shape[-2:] != (size, size):
        images = torch.stack([torch.from_numpy(np.array(
            Image.fromarray(img.permute(1, 2, 0).numpy()).resize((size, size), Image.BILINEAR))).permute(2, 0, 1)
            for img in images])
    return images.float().div(255)


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained encoder f of a model file written by `simclr pretrain`, in eval mode, with
    `encoder.info` (arch, width, norm, input_size, feature_dim, pixels, dataset content hash) and
    `encoder.preprocess(uint8 images)`."""
    net, checkpoint = model_lib.load_trained(Path(path), map_location)
    m = checkpoint["params"]["model"]
    encoder = net.encoder.eval()
    encoder.info = {"arch": m["arch"], "width": m.get("width", 64), "norm": m["norm"],
                    "input_size": m["input_size"], "feature_dim": model_lib.feature_dim(m["arch"], m.get("width", 64)),
                    "pixels": PIXELS, "manifest_hash": checkpoint["manifest_hash"], "file": str(path)}
    encoder.preprocess = lambda images: preprocess(images, m["input_size"])
    return encoder
