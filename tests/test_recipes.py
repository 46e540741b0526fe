"""Every preset that names a source is that source's recipe, key by key.

Each table below holds, for every key of the sections pretrain reads (model, augment, train, optim),
either the source's value - as the source writes it, with where it says so, and the conversion to this
code's units - or the reason the preset departs from it, or why the key is not part of the recipe. A key
that a preset changes, or inherits, without a line here fails the test, and so does any value that
moved. The loss-scale conversion: this code's loss is the official SimCLR's loss_a + loss_b, twice the
mean over 2N anchors that dkobak/simclr-cifar10 and solo-learn minimise, so every gradient is doubled;
lr / 2 and weight decay x 2 give their SGD and clipped-LARS updates (tests/test_optim.py checks LARS).
"""
from pathlib import Path

import pytest
import yaml

from simclr import config

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2  # loss_a + loss_b over the mean over 2N anchors


def half(x):
    return x / SCALE


def double(x):
    return x * SCALE


def same(x):
    return x


DKOBAK_README = 'dkobak/simclr-cifar10 README.md'
DKOBAK_ROW = DKOBAK_README + ', "Training ResNet18 for 100 epochs"'
DKOBAK_CODE = "dkobak/simclr-cifar10 simclr-cifar10.py"
SOLO = "vturrisi/solo-learn scripts/pretrain/cifar/simclr.yaml"
SOLO_AUG = "vturrisi/solo-learn scripts/pretrain/cifar/augmentations/symmetric.yaml"
SOLO_BASE = "vturrisi/solo-learn solo/methods/base.py"
PAPER = "Chen et al. 2020 (arXiv:2002.05709), Appendix B.9"
OFFICIAL = "google-research/simclr (tf2)"
TORCHVISION_RATIO = [0.75, 1.3333333333333333]  # RandomResizedCrop's default ratio=(3/4, 4/3)

# key: (source value, conversion, citation)
DKOBAK = {
    "model.arch": ("resnet18", same, DKOBAK_ROW + ' ("ResNet18"); BACKBONE = "resnet18"'),
    "model.width": (64, same, DKOBAK_CODE + ": torchvision resnet18 (64 channels in its first stage)"),
    "model.input_size": (32, same, DKOBAK_CODE + ": RandomResizedCrop(size=32)"),
    "model.norm": ("batch", same, DKOBAK_CODE + ": torchvision resnet18's BatchNorm2d"),
    "model.proj_dim": (128, same, DKOBAK_README + ': "The projection head has output dimensionality 128"'),
    "model.head": ("mlp", same, DKOBAK_CODE + ": nn.Linear(512, PROJECTOR_HIDDEN_SIZE), nn.ReLU(), nn.Linear(..., 128)"),
    "model.head_hidden": (1024, same, DKOBAK_README + ': "a hidden layer with 1024 neurons"'),
    "model.zero_init_residual": (False, same, DKOBAK_CODE + ": backbone_network(weights=None), torchvision's default init"),
    "model.stem": ("cifar", same, DKOBAK_CODE + ": conv1 replaced by a 3x3 stride-1 conv, max-pool removed"),
    "model.stored_size": (None, same, DKOBAK_CODE + ": CIFAR10 images at their own 32 px, cropped to 32"),
    "augment.blur_p": (0.0, same, DKOBAK_CODE + ": no GaussianBlur in the transforms"),
    "augment.crop_scale": ([0.2, 1.0], same, DKOBAK_CODE + ": CROP_LOW_SCALE = 0.2, scale=(CROP_LOW_SCALE, 1)"),
    "augment.crop_ratio": (TORCHVISION_RATIO, same, DKOBAK_CODE + ": RandomResizedCrop's default ratio"),
    "augment.flip_p": (0.5, same, DKOBAK_CODE + ": RandomHorizontalFlip() (p=0.5)"),
    "augment.jitter_strength": (0.5, same, DKOBAK_CODE + ": ColorJitter(0.4, 0.4, 0.4, 0.1) = 0.8s, 0.8s, 0.8s, 0.2s at s=0.5"),
    "augment.jitter_p": (0.8, same, DKOBAK_CODE + ": RandomApply([ColorJitter(...)], p=0.8)"),
    "augment.gray_p": (0.1, same, DKOBAK_README + ': "set the grayscale probability to 0.1 following Ermolov et al. 2020"'),
    "train.epochs": (100, same, DKOBAK_ROW + ": |100|0.06|20 min|"),
    "train.batch_size": (512, same, DKOBAK_README + ": |ResNet18|512 |11.9 s|"),
    "train.temperature": (0.5, same, DKOBAK_CODE + ": def infoNCE(features, temperature=0.5)"),
    "train.forward_views": ("separate", same, DKOBAK_CODE + ": _, z1 = model(view1); _, z2 = model(view2)"),
    "train.images_per_class": (None, same, DKOBAK_CODE + ": the whole CIFAR10(train=True) split"),
    "train.chunk_size": (None, same, DKOBAK_CODE + ": the whole batch in each forward"),
    "optim.name": ("sgd", same, DKOBAK_README + ': "SGD with momentum 0.9"'),
    "optim.momentum": (0.9, same, DKOBAK_CODE + ": MOMENTUM = 0.9, NESTEROV = False"),
    "optim.base_lr": (0.06, half, DKOBAK_ROW + ': "base learning rate 0.06 instead of 0.03"; lr = BASE_LR * BATCH_SIZE / 256'),
    "optim.weight_decay": (5e-4, double, DKOBAK_README + ': "weight decay 0.0005"'),
    "optim.decay_norm_bias": (True, same, DKOBAK_CODE + ": SGD(model.parameters(), weight_decay=WEIGHT_DECAY)"),
    "optim.warmup_epochs": (0, same, DKOBAK_CODE + ": CosineAnnealingLR(optimizer, T_max=N_EPOCHS), no warm-up"),
}
DKOBAK_DEPARTS = {
    "train.precision": "bf16 for speed on tensor-core GPUs (dkobak: fp32)",
    "train.compile": "speed: the compiled encoder and augmentation (same computation)",
    "train.deterministic": "cuDNN's fastest kernels (dkobak sets nothing: the same)",
    "train.channels_last": "memory layout only",
}
# schedule granularity, full batches and the stem conv's init are not keys: see the preset's header
NOT_RECIPE = {
    "train.knn_every": "the monitor only reads the model",
    "train.splits": "CIFAR-10 has no unlabelled/ split: both is the train split, as in every source",
    "augment.blur_sigma": "unused: blur_p is 0",
    "train.seed": "a seed, not a recipe value",
    "train.sync_bn": "several GPUs only",
    "train.accumulate": "no accumulation: chunk_size is the whole batch",
}
SGD_UNUSED = {k: "LARS only; the recipe uses SGD" for k in ("optim.trust_coefficient", "optim.clip_lr",
                                                            "optim.trust_denominator")}

SOLO_LEARN = {
    "model.arch": ("resnet18", same, SOLO + ': backbone: name: "resnet18"'),
    "model.width": (64, same, SOLO_BASE + ": torchvision resnet18"),
    "model.input_size": (32, same, SOLO_AUG + ": crop_size: 32"),
    "model.norm": ("batch", same, SOLO + ": sync_batchnorm: True (BatchNorm)"),
    "model.proj_dim": (256, same, SOLO + ": proj_output_dim: 256"),
    "model.head": ("mlp", same, "vturrisi/solo-learn solo/methods/simclr.py: Linear, ReLU, Linear"),
    "model.head_hidden": (2048, same, SOLO + ": proj_hidden_dim: 2048"),
    "model.zero_init_residual": (False, same, SOLO_BASE + ": backbone kwargs {} (torchvision's default)"),
    "model.stem": ("cifar", same, SOLO_BASE + ": for cifar, conv1 = 3x3 stride 1 and maxpool = Identity"),
    "model.stored_size": (None, same, "CIFAR-10 at its own 32 px (solo-learn's cifar pipeline crops 32 from 32)"),
    "augment.crop_scale": ([0.08, 1.0], same, SOLO_AUG + ": crop_min_scale: 0.08, crop_max_scale: 1.0"),
    "augment.crop_ratio": (TORCHVISION_RATIO, same, "solo-learn's RandomResizedCrop: the default ratio"),
    "augment.flip_p": (0.5, same, SOLO_AUG + ": horizontal_flip: prob: 0.5"),
    "augment.jitter_strength": (1.0, same, SOLO_AUG + ": brightness 0.8, contrast 0.8, saturation 0.8, hue 0.2 (s=1)"),
    "augment.jitter_p": (0.8, same, SOLO_AUG + ": color_jitter: prob: 0.8"),
    "augment.gray_p": (0.2, same, SOLO_AUG + ": grayscale: prob: 0.2"),
    "train.epochs": (1000, same, SOLO + ": max_epochs: 1000"),
    "train.batch_size": (256, same, SOLO + ": batch_size: 256, devices: [0]"),
    "train.temperature": (0.2, same, SOLO + ": temperature: 0.2"),
    "train.forward_views": ("separate", same, SOLO_BASE + ": training_step, one base_training_step per crop"),
    "train.images_per_class": (None, same, "the whole CIFAR-10 train split"),
    "train.chunk_size": (None, same, "the whole batch in each forward"),
    "optim.name": ("lars", same, SOLO + ': optimizer: name: "lars"'),
    "optim.momentum": (0.9, same, "vturrisi/solo-learn solo/args/pretrain.py: lars momentum default 0.9"),
    "optim.base_lr": (0.4, half, SOLO + ": lr: 0.4 (scaled by batch_size / 256 in solo/args/pretrain.py)"),
    "optim.weight_decay": (1e-4, double, SOLO + ": weight_decay: 1e-4"),
    "optim.trust_coefficient": (0.02, same, SOLO + ": eta: 0.02 (under the clip the loss scale cancels)"),
    "optim.clip_lr": (True, same, SOLO + ": clip_lr: True"),
    "optim.trust_denominator": ("separate", same, "vturrisi/solo-learn solo/utils/lars.py: g_norm + p_norm * weight_decay + eps"),
    "optim.decay_norm_bias": (False, same, SOLO + ": exclude_bias_n_norm: True (no LARS, no decay on 1-D parameters)"),
    "optim.warmup_epochs": (10, same, SOLO_BASE + ": scheduler.warmup_epochs default 10 (warmup_cosine)"),
}
SOLO_DEPARTS = {
    "augment.blur_p": "0, not solo-learn's gaussian_blur prob 0.5: the preset computes what it did before blur existed",
    "train.precision": "bf16 autocast (solo-learn: precision 16, fp16 mixed)",
    "train.deterministic": "cuDNN's fastest kernels",
    "train.compile": "off, as solo-learn",
    "train.channels_last": "memory layout only (solo-learn converts to channels_last too)",
}

B9 = {
    "model.arch": ("resnet50", same, PAPER + ": ResNet-50"),
    "model.width": (64, same, PAPER + ": the standard ResNet-50"),
    "model.input_size": (32, same, PAPER + ": CIFAR-10's 32x32 images"),
    "model.norm": ("batch", same, OFFICIAL + " resnet.py: BatchNorm"),
    "model.proj_dim": (128, same, OFFICIAL + " run.py: proj_out_dim 128"),
    "model.head": ("official", same, OFFICIAL + " model_util.py: Linear-BN-ReLU-Linear-BN (v1, center=False last)"),
    "model.head_hidden": (None, same, OFFICIAL + " model_util.py: hidden width = the input's"),
    "model.zero_init_residual": (True, same, OFFICIAL + " resnet.py: init_zero=True on each block's last BN"),
    "model.stem": ("cifar", same, PAPER + ": the first conv 3x3 stride 1, the first max-pool removed"),
    "model.stored_size": (None, same, PAPER + ": CIFAR-10's own 32x32 images"),
    "augment.blur_p": (0.0, same, PAPER + ": no Gaussian blur on CIFAR-10"),
    "augment.crop_scale": ([0.08, 1.0], same, PAPER + ": random crop (Inception-style, area 0.08-1)"),
    "augment.crop_ratio": (TORCHVISION_RATIO, same, OFFICIAL + " data_util.py: aspect ratio 3/4-4/3"),
    "augment.flip_p": (0.5, same, PAPER + ": random horizontal flip"),
    "augment.jitter_strength": (0.5, same, PAPER + ": color distortion strength 0.5"),
    "augment.jitter_p": (0.8, same, OFFICIAL + " data_util.py: color jitter with p=0.8"),
    "augment.gray_p": (0.2, same, OFFICIAL + " data_util.py: color drop (grayscale) p=0.2"),
    "train.epochs": (1000, same, PAPER + ": 1000 epochs"),
    "train.batch_size": (1024, same, PAPER + ": batch size 1024 (Figure B.7 sweeps 256-4096)"),
    "train.temperature": (0.5, same, PAPER + ": temperature 0.5"),
    "train.forward_views": ("joint", same, OFFICIAL + " model.py: tf.concat of both views, one forward"),
    "train.images_per_class": (None, same, PAPER + ": the whole train split"),
    "train.accumulate": ("exact", same, PAPER + ": one batch of 1024 (exact keeps that objective in chunks)"),
    "optim.name": ("lars", same, PAPER + ": LARS"),
    "optim.momentum": (0.9, same, OFFICIAL + " lars_optimizer.py: momentum 0.9"),
    "optim.base_lr": (1.0, same, PAPER + ": learning rate 1.0 from {0.5, 1.0, 1.5} x batch/256 (loss_a + loss_b: the same loss)"),
    "optim.weight_decay": (1e-6, same, PAPER + ": weight decay 1e-6"),
    "optim.trust_coefficient": (0.001, same, OFFICIAL + " lars_optimizer.py: eeta=0.001"),
    "optim.clip_lr": (False, same, OFFICIAL + " lars_optimizer.py: no clipping"),
    "optim.trust_denominator": ("combined", same, OFFICIAL + " lars_optimizer.py: ||w|| / ||grad + wd w||"),
    "optim.decay_norm_bias": (False, same, OFFICIAL + " lars_optimizer.py: batch_normalization and bias excluded"),
    "optim.warmup_epochs": (10, same, PAPER + ": 10 warm-up epochs"),
}
B9_DEPARTS = {
    "train.precision": "bf16 (B.9 trained on TPUs in bfloat16)",
    "train.deterministic": "cuDNN's fastest kernels",
    "train.compile": "off by default",
    "train.channels_last": "memory layout only",
    "train.chunk_size": "null: the whole batch at once (set it where 1024 does not fit)",
}

SOLO_IN100 = "vturrisi/solo-learn scripts/pretrain/imagenet-100/simclr.yaml"
SOLO_IN100_AUG = "vturrisi/solo-learn scripts/pretrain/imagenet-100/augmentations/symmetric.yaml"
STL10 = {
    "model.arch": ("resnet18", same, SOLO_IN100 + ': backbone: name: "resnet18"'),
    "model.width": (64, same, SOLO_BASE + ": torchvision resnet18"),
    "model.stem": ("imagenet", same, SOLO_BASE + ": the torchvision resnet18 stem, changed for cifar only"),
    "model.norm": ("batch", same, SOLO_IN100 + ": sync_batchnorm: True (BatchNorm)"),
    "model.proj_dim": (512, same, SOLO_IN100 + ": proj_output_dim: 512"),
    "model.head": ("mlp", same, "vturrisi/solo-learn solo/methods/simclr.py: Linear, ReLU, Linear"),
    "model.head_hidden": (4096, same, SOLO_IN100 + ": proj_hidden_dim: 4096"),
    "model.zero_init_residual": (False, same, SOLO_BASE + ": backbone kwargs {} (torchvision's default)"),
    "augment.crop_scale": ([0.08, 1.0], same, SOLO_IN100_AUG + ": crop_min_scale: 0.08, crop_max_scale: 1.0"),
    "augment.crop_ratio": (TORCHVISION_RATIO, same, "solo-learn's RandomResizedCrop: the default ratio"),
    "augment.flip_p": (0.5, same, SOLO_IN100_AUG + ": horizontal_flip: prob: 0.5"),
    "augment.jitter_strength": (1.0, same, SOLO_IN100_AUG + ": brightness 0.8, contrast 0.8, saturation 0.8, hue 0.2 (s=1)"),
    "augment.jitter_p": (0.8, same, SOLO_IN100_AUG + ": color_jitter: prob: 0.8"),
    "augment.gray_p": (0.2, same, SOLO_IN100_AUG + ": grayscale: prob: 0.2"),
    "augment.blur_p": (0.5, same, SOLO_IN100_AUG + ": gaussian_blur: prob: 0.5"),
    "augment.blur_sigma": ([0.1, 2.0], same, "vturrisi/solo-learn solo/data/pretrain_dataloader.py: GaussianBlur sigma [0.1, 2.0]"),
    "train.epochs": (400, same, SOLO_IN100 + ": max_epochs: 400"),
    "train.batch_size": (256, same, SOLO_IN100 + ": batch_size: 128, devices: [0, 1]"),
    "train.temperature": (0.2, same, SOLO_IN100 + ": temperature: 0.2"),
    "train.forward_views": ("separate", same, SOLO_BASE + ": training_step, one base_training_step per crop"),
    "train.images_per_class": (None, same, "the whole train split"),
    "train.chunk_size": (None, same, "the whole batch in each forward"),
    "optim.name": ("lars", same, SOLO_IN100 + ': optimizer: name: "lars"'),
    "optim.momentum": (0.9, same, "vturrisi/solo-learn solo/args/pretrain.py: lars momentum default 0.9"),
    "optim.base_lr": (0.3, half, SOLO_IN100 + ": lr: 0.3 (x batch_size x devices / 256 = 1 in solo/args/pretrain.py)"),
    "optim.weight_decay": (1e-4, double, SOLO_IN100 + ": weight_decay: 1e-4"),
    "optim.trust_coefficient": (0.02, same, SOLO_IN100 + ": eta: 0.02 (under the clip the loss scale cancels)"),
    "optim.clip_lr": (True, same, SOLO_IN100 + ": clip_lr: True"),
    "optim.trust_denominator": ("separate", same, "vturrisi/solo-learn solo/utils/lars.py: g_norm + p_norm * weight_decay + eps"),
    "optim.decay_norm_bias": (False, same, SOLO_IN100 + ": exclude_bias_n_norm: True"),
    "optim.warmup_epochs": (10, same, SOLO_BASE + ": scheduler.warmup_epochs default 10 (warmup_cosine)"),
}
STL10_DEPARTS = {
    "model.input_size": "96, STL-10's native side (crop_size 224 for ImageNet-100 there)",
    "model.stored_size": "96: crops are cut from the whole STL-10 image, as solo-learn's loader crops the image it reads",
    "train.splits": "both: STL-10's train + unlabelled, the standard STL-10 protocol (the data, not the recipe)",
    **SOLO_DEPARTS,
    **{k: v for k, v in NOT_RECIPE.items() if k not in ("train.splits", "augment.blur_sigma")},
}
STL10_DEPARTS.pop("augment.blur_p")

RECIPES = {
    "stl10-resnet18.yaml": (STL10, STL10_DEPARTS),
    "cifar10-resnet18-short.yaml": (DKOBAK, {**DKOBAK_DEPARTS, **NOT_RECIPE, **SGD_UNUSED}),
    "cifar10-resnet18.yaml": (SOLO_LEARN, {**SOLO_DEPARTS, **NOT_RECIPE}),
    "cifar10-b9-resnet50.yaml": (B9, {**B9_DEPARTS, **{k: v for k, v in NOT_RECIPE.items() if k != "train.accumulate"}}),
}
SECTIONS = ("model", "augment", "train", "optim")


def pretrain_keys(params):
    return {f"{s}.{k}" for s in SECTIONS for k in params[s]}


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_the_preset_is_its_source_key_by_key(preset):
    params = config.load_params(ROOT / "params.yaml", ROOT / "configs" / preset)
    table, departs = RECIPES[preset]
    got = {k: config.get(params, k) for k in table}
    want = {k: convert(value) for k, (value, convert, _) in table.items()}
    for key, value in want.items():
        assert got[key] == (pytest.approx(value) if isinstance(value, float) else value), f"{preset}: {key}"
    assert not set(table) & set(departs)
    uncovered = pretrain_keys(params) - set(table) - set(departs)
    assert not uncovered, f"{preset}: keys with neither a source value nor a stated departure: {sorted(uncovered)}"


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_every_key_the_preset_sets_is_cited_in_its_header_table(preset):
    """A preset that says it is a source's recipe sets nothing that the table above does not account for."""
    own = yaml.safe_load((ROOT / "configs" / preset).read_text())
    table, departs = RECIPES[preset]
    for section in SECTIONS:
        for key in own.get(section, {}):
            assert f"{section}.{key}" in table or f"{section}.{key}" in departs, f"{preset}: {section}.{key}"
    header = (ROOT / "configs" / preset).read_text().split("\ndata:")[0]
    assert "tests/test_recipes.py" in header  # the header says where it is held to its source


def test_the_official_variant_is_the_short_recipe_with_the_official_choices():
    """configs/cifar10-resnet18-short-official.yaml: dkobak's 100-epoch row with exactly the four choices
    that the official code makes differently put back (head, init, decay on norm and bias, one forward)."""
    short = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-resnet18-short.yaml")
    official = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-resnet18-short-official.yaml")
    changed = {k for k in pretrain_keys(short) if config.get(short, k) != config.get(official, k)}
    assert changed == {"model.head", "model.head_hidden", "model.zero_init_residual", "optim.decay_norm_bias",
                       "train.forward_views"}
    for key in changed:
        assert config.get(official, key) == B9[key][0], key  # the official code's value
    for section in ("data", "extract", "probe", "runtime"):
        assert short[section] == official[section]


def test_each_conversion_table_entry_cites_a_source():
    for table, _ in RECIPES.values():
        for key, (_, convert, cite) in table.items():
            assert cite and convert in (same, half, double), key
