"""The SimCLR augmentation of Appendix B.9, batched on the training device with per-sample randomness.

    random resized crop (scale 0.08-1, ratio 3/4-4/3) -> horizontal flip (p=0.5)
    -> colour jitter (brightness 0.8s, contrast 0.8s, saturation 0.8s, hue 0.2s; random order; p=0.8)
    -> grayscale (p=0.2);  s = 0.5, no Gaussian blur on CIFAR-10
    -> Gaussian blur (augment.blur_p; Appendix A: p 0.5 for every dataset but CIFAR-10, sigma in
       [0.1, 2.0], kernel 10% of the side: the official code's height // 10, made odd).

Every sample draws its own crop box, flip, jitter factors and order. torchvision's functional ops
take one crop box or one factor per call, so the ops here are batched versions of them (crop and
resize as per-sample weight matrices; colour ops with per-sample factors). tests/test_augment.py
checks each against torchvision image by image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_strength: float = 0.5
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @classmethod
    def from_params(cls, augment: dict) -> "AugmentConfig":
        return cls(
            crop_scale=tuple(augment["crop_scale"]),
            crop_ratio=tuple(augment["crop_ratio"]),
            flip_p=augment["flip_p"],
            jitter_strength=augment["jitter_strength"],
            jitter_p=augment["jitter_p"],
            gray_p=augment["gray_p"],
            blur_p=augment.get("blur_p", 0.0),
            blur_sigma=tuple(augment.get("blur_sigma", (0.1, 2.0))),
        )


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def sample_crop_boxes(n: int, height: int, width: int, cfg: AugmentConfig, g: torch.Generator, device,
                      attempts: int = 10) -> torch.Tensor:
    """Per-sample crop boxes (top, left, h, w) as int64 n x 4, drawn as RandomResizedCrop.get_params does."""
    area = height * width
    log_ratio = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    target = area * _uniform(n * attempts, *cfg.crop_scale, g, device).view(n, attempts)
    aspect = torch.exp(_uniform(n * attempts, *log_ratio, g, device)).view(n, attempts)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # n x attempts
    first = torch.argmax(ok.int(), dim=1)  # first valid attempt (0 when none)
    found = ok.any(dim=1)
    rows = torch.arange(n, device=device)
    h, w = h[rows, first], w[rows, first]
    # fallback, as torchvision: a centre crop at the clamped aspect ratio
    in_ratio = width / height
    if in_ratio < cfg.crop_ratio[0]:
        fw, fh = width, round(width / cfg.crop_ratio[0])
    elif in_ratio > cfg.crop_ratio[1]:
        fh, fw = height, round(height * cfg.crop_ratio[1])
    else:
        fw, fh = width, height
    h = torch.where(found, h, torch.full_like(h, fh))
    w = torch.where(found, w, torch.full_like(w, fw))
    top = torch.floor(torch.rand(n, generator=g, device=device) * (height - h + 1))
    left = torch.floor(torch.rand(n, generator=g, device=device) * (width - w + 1))
    top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1).long()


def _resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """N x out_size x in_size interpolation weights of a per-sample 1-D crop-and-resize.

    Antialiased bilinear, as torch's interpolate(antialias=True) and PIL compute it: output pixel j
    is centred at c = (j + 0.5) * scale in crop coordinates, and input pixel x gets the triangle
    weight max(0, 1 - |x + 0.5 - c| / max(scale, 1)), renormalised; pixels outside the crop get 0.
    """
    scale = (length / out_size).unsqueeze(1)  # N x 1
    centres = (torch.arange(out_size, device=start.device, dtype=scale.dtype) + 0.5) * scale  # N x S
    x = torch.arange(in_size, device=start.device, dtype=scale.dtype) - start.unsqueeze(1)  # N x in, crop coords
    inside = (x >= 0) & (x < length.unsqueeze(1))
    dist = (x.unsqueeze(1) + 0.5 - centres.unsqueeze(2)).abs() / scale.clamp(min=1).unsqueeze(2)  # N x S x in
    w = (1 - dist).clamp(min=0) * inside.unsqueeze(1)
    return w / w.sum(dim=2, keepdim=True)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box i = (top, left, h, w) of image i and resize it to size x size.

    images: float N x C x H x W. Separable antialiased bilinear, batched as one einsum over
    per-sample weight matrices (torchvision's resized_crop takes one box per call)."""
    _, _, height, width = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    wy = _resize_weights(top, h, height, size)  # N x S x H
    wx = _resize_weights(left, w, width, size)  # N x S x W
    return torch.einsum("nsh,nchw,ntw->ncst", wy, images, wx)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Whole float images N x C x H x W resized to size x size, as resized_crop resizes a crop (the
    evaluation view of a stored image larger than the input)."""
    n, _, height, width = images.shape
    box = torch.tensor([0, 0, height, width], device=images.device).expand(n, 4)
    return resized_crop(images, box, size)


def blur_kernel_size(side: int) -> int:
    """10% of the side, odd: the official code's kernel_size = height // 10, radius = kernel_size // 2,
    kernel_size = 2 radius + 1 (google-research/simclr data_util.py, random_blur / gaussian_blur)."""
    return 2 * ((side // 10) // 2) + 1


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur of float N x C x H x W; sigma: N. Kernel blur_kernel_size(H)
    and reflect padding, as torchvision's gaussian_blur (tests/test_augment.py compares image by image)."""
    n, c, height, width = x.shape
    k = blur_kernel_size(height)
    if k == 1 or n == 0:
        return x
    r = k // 2
    offsets = torch.linspace(-r, r, k, device=x.device, dtype=x.dtype)
    w = torch.exp(-0.5 * (offsets.view(1, k) / sigma.to(x.dtype).view(n, 1)) ** 2)
    w = (w / w.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # N*C x k
    flat = x.reshape(1, n * c, height, width)
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (r, r, 0, 0), mode="reflect"),
                                      w.view(n * c, 1, 1, k), groups=n * c)
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (0, 0, r, r), mode="reflect"),
                                      w.view(n * c, 1, k, 1), groups=n * c)
    return flat.view(n, c, height, width)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W -> N x 1 x H x W luma."""
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * grayscale(x)).clamp_(0, 1)


def _rgb_to_hsv(x: torch.Tensor):
    """(h, s, v), each N x H x W, as torchvision computes them: the hue sector is that of the
    largest channel (first of r, g, b on ties), picked with one gather."""
    v, idx = x.max(dim=1)
    cr = v - x.amin(dim=1)
    flat = cr == 0
    ones = torch.ones_like(v)
    s = cr / torch.where(flat, ones, v)
    r, g, b = x.unbind(1)
    num = torch.stack((g - b, b - r, r - g), dim=1).gather(1, idx.unsqueeze(1)).squeeze(1)
    h = torch.remainder((2.0 * idx + num / torch.where(flat, ones, cr)) / 6.0, 1.0)
    return h, s, v


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Closed form of the piecewise-linear HSV->RGB map: channel n in (R, G, B) = (5, 3, 1) is
    v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6 (same values as torchvision's
    six-case version, without building all six cases). h, s, v: N x H x W; returns N x 3 x H x W."""
    h, s, v = h.unsqueeze(1), s.unsqueeze(1), v.unsqueeze(1)
    n = torch.arange(5.0, 0.0, -2.0, device=v.device, dtype=v.dtype).view(1, 3, 1, 1)  # 5, 3, 1, made on the device
    k = torch.remainder(n + 6.0 * h, 6.0)  # N x 3 x H x W
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb(torch.remainder(h + f.view(-1, 1, 1), 1.0), s, v)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor,
                 gather: bool | None = None) -> torch.Tensor:
    """Per-sample jitter. factors: N x 4 (brightness, contrast, saturation, hue); order: N x 4
    permutations of 0..3; apply: N bool. Two ways to the same values (tests/test_augment.py):

    - mask selection (CUDA, torch.compile): at each of the four positions every op runs on the whole
      batch and each sample keeps the result of the op its order puts there. No data-dependent
      shapes, so no device-to-host sync and one graph, at four times the arithmetic;
    - gather (CPU, eager; the default there): each op runs only on the samples that take it at that
      position. Finding them reads the masks back, which costs nothing on a CPU.
    """
    if gather is None:
        gather = x.device.type == "cpu" and not torch.compiler.is_compiling()
    if gather:
        x = x.clone()
        for pos in range(4):
            for op_index, op in enumerate(JITTER_OPS):
                idx = torch.nonzero(apply & (order[:, pos] == op_index)).flatten()
                if len(idx):
                    x[idx] = op(x[idx], factors[idx, op_index])
        return x
    for pos in range(4):
        for op_index, op in enumerate(JITTER_OPS):
            take = (apply & (order[:, pos] == op_index)).view(-1, 1, 1, 1)  # N x 1 x 1 x 1
            x = torch.where(take, op(x, factors[:, op_index]), x)
    return x


def sample_jitter(n: int, cfg: AugmentConfig, g: torch.Generator, device):
    s = cfg.jitter_strength
    lo = max(0.0, 1 - 0.8 * s)
    factors = torch.stack([
        _uniform(n, lo, 1 + 0.8 * s, g, device),
        _uniform(n, lo, 1 + 0.8 * s, g, device),
        _uniform(n, lo, 1 + 0.8 * s, g, device),
        _uniform(n, -0.2 * s, 0.2 * s, g, device),
    ], dim=1)
    order = torch.argsort(torch.rand(n, 4, generator=g, device=device), dim=1)  # a random permutation each
    apply = torch.rand(n, generator=g, device=device) < cfg.jitter_p
    return factors, order, apply


def sample_views(n: int, height: int, width: int, cfg: AugmentConfig, g: torch.Generator, device) -> dict:
    """Every random choice of n views (crop boxes, flips, jitter factors, order and use, grayscale),
    drawn from g on the device."""
    boxes = sample_crop_boxes(n, height, width, cfg, g, device)  # n x 4
    flip = torch.rand(n, generator=g, device=device) < cfg.flip_p
    factors, order, apply = sample_jitter(n, cfg, g, device)  # n x 4, n x 4, n
    gray = torch.rand(n, generator=g, device=device) < cfg.gray_p
    views = {"boxes": boxes, "flip": flip, "factors": factors, "order": order, "apply": apply, "gray": gray}
    if cfg.blur_p > 0:  # drawn only when used: without blur the stream is the one before blur existed
        views["blur"] = torch.rand(n, generator=g, device=device) < cfg.blur_p
        views["sigma"] = _uniform(n, *cfg.blur_sigma, g, device)
    return views


def render(images: torch.Tensor, p: dict, size: int, gather: bool | None = None) -> torch.Tensor:
    """The views drawn in p, of uint8 images N x 3 x H x W; float N x 3 x size x size in [0, 1].
    No randomness; compiled (train.compile) or on CUDA no data-dependent shapes either, so
    torch.compile can fuse it; `gather` picks color_jitter's path (None: by device)."""
    x = images.float().div_(255)
    x = resized_crop(x, p["boxes"], size).clamp_(0, 1)
    x = torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
    x = color_jitter(x, p["factors"], p["order"], p["apply"], gather)
    x = torch.where(p["gray"].view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    if "blur" in p:
        if gather is None:
            gather = x.device.type == "cpu" and not torch.compiler.is_compiling()
        if gather:  # only the samples that are blurred (reads the mask back: free on a CPU)
            idx = torch.nonzero(p["blur"]).flatten()
            x = x.index_copy(0, idx, gaussian_blur(x[idx], p["sigma"][idx]))
        else:
            x = torch.where(p["blur"].view(-1, 1, 1, 1), gaussian_blur(x, p["sigma"]), x)
    return x


def augment(images: torch.Tensor, size: int, cfg: AugmentConfig, g: torch.Generator, render=render) -> torch.Tensor:
    """One random view of each image. images: uint8 N x 3 x H x W (on the device); returns float N x 3 x size x size in [0, 1]."""
    n, _, height, width = images.shape
    return render(images, sample_views(n, height, width, cfg, g, images.device), size)


def two_views(images: torch.Tensor, size: int, cfg: AugmentConfig, g: torch.Generator, render=render):
    """The SimCLR pair: two independent views of the same images, made in one batch of 2N (half
    the kernel launches of two calls; on a GPU the augmentation is launch-bound)."""
    n = len(images)
    both = augment(torch.cat([images, images]), size, cfg, g, render)  # 2N x 3 x size x size
    return both[:n], both[n:]
