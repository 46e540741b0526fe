"""The trained encoder: reading a model file, the batched feature loop, and taking it away
(`from simclr import load_encoder`).

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
from PIL import Image
from torch import nn

from . import augment as aug, io, model as model_lib
from .data import resized, short_side_crop
from .errors import UserError
from .progress import progress

# How pretrain and extract feed images: no mean/std normalisation, pixels scaled to [0, 1].
PIXELS = "RGB uint8 / 255, no mean/std normalisation; resized to input_size x input_size by PIL bilinear"


@torch.no_grad()
def features(encoder: nn.Module, images: torch.Tensor, batch_size: int, device, autocast,
             channels_last: bool = False, desc: str | None = None, log=print, size: int | None = None) -> torch.Tensor:
    """h of uint8 images (N x 3 x S x S, e.g. a mapped cache entry: read a batch at a time), in eval
    mode and without augmentation, on `device`. With `size` other than S (model.stored_size above
    model.input_size), each stored image is resized whole to size x size as the augmentation resizes
    a crop. The encoder is left in eval mode; `autocast` is a context manager factory (precision);
    with `desc`, progress is shown (see progress.progress)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    encoder.eval()
    out = []
    starts = range(0, len(images), batch_size)
    for a in progress(starts, len(starts), desc, log, enabled=desc is not None):
        x = images[a:a + batch_size].to(device).float().div_(255)
        if size is not None and x.shape[-1] != size:
            x = aug.resize(x, size).clamp_(0, 1)
        x = x.contiguous(memory_format=fmt)
        with autocast():
            out.append(encoder(x).float())  # h: n x feature_dim
    return torch.cat(out)


def load_trained(path: Path, map_location="cpu") -> tuple[model_lib.SimCLR, dict]:
    """The network of a model file written by `simclr pretrain`, with its weights, and the file's contents.
    The file holds only tensors and plain Python, so it loads with weights_only=True."""
    checkpoint = io.load_torch(path, "a model written by simclr pretrain", keys=("model", "params", "manifest_hash"))
    params = checkpoint["params"]
    net = model_lib.build(params, params["train"]["seed"])
    try:
        net.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:  # e.g. a model file from before the official head and width
        lines = str(exc).splitlines()
        raise UserError(f"{path}: its weights do not fit the model its params describe (written by an older "
                        f"version of pretrain?): {(lines[1] if len(lines) > 1 else lines[0]).strip()}; "
                        "rerun pretrain") from None
    return net.to(map_location), checkpoint


def preprocess(images: torch.Tensor, size: int, stored_size: int | None = None) -> torch.Tensor:
    """uint8 RGB images (N x 3 x H x W) as the encoder saw its data, scaled to [0, 1]: the way the
    decode cache stores them (stored_size None: resized to size x size by PIL bilinear, only when the
    size differs; else short side to stored_size and the centre square), then, when stored_size is
    set, resized whole to size x size as features() does."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected uint8 N x 3 x H x W, found {images.dtype} {tuple(images.shape)}")
    side = stored_size or size
    if images.shape[-2:] != (side, side):
        shrink = (lambda im: short_side_crop(im, side)) if stored_size else (lambda im: resized(im, side))
        images = torch.stack([torch.from_numpy(np.array(shrink(Image.fromarray(img.permute(1, 2, 0).numpy()))))
                              .permute(2, 0, 1) for img in images])
    x = images.float().div(255)
    return aug.resize(x, size).clamp_(0, 1) if x.shape[-1] != size else x


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained encoder f of a model file written by `simclr pretrain`, in eval mode, with
    `encoder.info` (arch, width, norm, input_size, feature_dim, pixels, dataset content hash) and
    `encoder.preprocess(uint8 images)`."""
    net, checkpoint = load_trained(Path(path), map_location)
    m = checkpoint["params"]["model"]
    encoder = net.encoder.eval()
    encoder.info = {"arch": m["arch"], "width": m.get("width", 64), "norm": m["norm"],
                    "input_size": m["input_size"], "stored_size": m.get("stored_size"), "feature_dim": model_lib.feature_dim(m["arch"], m.get("width", 64)),
                    "pixels": PIXELS, "manifest_hash": checkpoint["manifest_hash"], "file": str(path)}
    encoder.preprocess = lambda images: preprocess(images, m["input_size"], m.get("stored_size"))
    return encoder
