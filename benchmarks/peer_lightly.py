"""The peer loop of the CPU benchmarks: SimCLR as a user writes it with lightly's parts.

lightly's SimCLRTransform (PIL, per image), SimCLRProjectionHead and NTXentLoss, over torchvision's
ImageFolder with a DataLoader and 2 workers, plain torch.optim.SGD with a cosine schedule, fp32,
eager: lightly's own SimCLR example, with the CPU preset's network (this project's ResNet-18 at
model.width, CIFAR stem) and recipe (crop scale, flip, jitter strength 0.5, no blur, no mean/std
normalisation, batch, lr, momentum, weight decay, temperature; lr and weight decay rescaled to
lightly's loss, see recipe). As in lightly's example, SGD decays every parameter (the preset spares
batch norm and biases). lightly is installed for these benchmarks only (`pip install lightly`); it
is not a dependency of the package.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from simclr import model as model_lib


def recipe(params: dict) -> dict:
    """The preset's keys the peer takes, with the checks that it can take them."""
    aug, train, optim = params["augment"], params["train"], params["optim"]
    if aug["blur_p"] != 0 or aug["crop_ratio"] != [0.75, 4 / 3] or aug["jitter_p"] != 0.8:
        raise SystemExit("peer: this benchmark maps the CPU preset's augmentation (no blur, jitter_p 0.8, "
                         f"ratio 3/4-4/3) onto lightly's; found blur_p {aug['blur_p']}, jitter_p {aug['jitter_p']}, "
                         f"crop_ratio {aug['crop_ratio']}")
    if optim["name"] != "sgd" or optim["warmup_epochs"] != 0:
        raise SystemExit(f"peer: expected the CPU preset's SGD without warmup, found {optim['name']}, "
                         f"warmup {optim['warmup_epochs']}")
    return {"size": params["model"]["input_size"], "crop_scale": tuple(aug["crop_scale"]), "flip_p": aug["flip_p"],
            "jitter_strength": aug["jitter_strength"], "gray_p": aug["gray_p"], "batch": train["batch_size"],
            "temperature": train["temperature"],
            # simclr's nt_xent is loss_a + loss_b, twice lightly's NTXentLoss (the mean over all 2N
            # anchors): the same SGD updates take twice the lr and half the weight decay
            "lr": 2 * optim["base_lr"] * train["batch_size"] / 256,
            "momentum": optim["momentum"], "weight_decay": optim["weight_decay"] / 2}


def loader(root: Path, r: dict, workers: int = 2, seed: int = 0) -> torch.utils.data.DataLoader:
    from lightly.transforms import SimCLRTransform
    from torchvision.datasets import ImageFolder

    transform = SimCLRTransform(input_size=r["size"], cj_prob=0.8, cj_strength=r["jitter_strength"],
                                min_scale=r["crop_scale"][0], random_gray_scale=r["gray_p"], gaussian_blur=0.0,
                                hf_prob=r["flip_p"], normalize=None)
    data = ImageFolder(str(Path(root) / "train"), transform=transform)
    return torch.utils.data.DataLoader(data, batch_size=r["batch"], shuffle=True, drop_last=True,
                                       num_workers=workers, generator=torch.Generator().manual_seed(seed))


class PeerSimCLR(nn.Module):
    def __init__(self, params: dict, seed: int):
        super().__init__()
        from lightly.models.modules import SimCLRProjectionHead

        self.encoder = model_lib.build(params, seed).encoder  # the preset's network, the same init
        dim = model_lib.feature_dim(params["model"]["arch"], params["model"]["width"])
        self.head = SimCLRProjectionHead(dim, dim, params["model"]["proj_dim"])

    def forward(self, x):
        return self.head(self.encoder(x))


def build(params: dict, seed: int):
    """(model, loss, optimiser, step): step(views) does one update and returns the loss."""
    from lightly.loss import NTXentLoss

    r = recipe(params)
    torch.manual_seed(seed)
    model = PeerSimCLR(params, seed)
    criterion = NTXentLoss(temperature=r["temperature"])
    opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"], weight_decay=r["weight_decay"])

    def step(views, lr: float | None = None):
        if lr is not None:
            for g in opt.param_groups:
                g["lr"] = lr
        x0, x1 = views
        z0, z1 = model(x0), model(x1)
        loss = criterion(z0, z1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return model, step, r


def cosine(step: float, total: float, peak: float) -> float:
    """Cosine decay from peak to 0 at `total` (steps, or seconds for a wall-time budget)."""
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
