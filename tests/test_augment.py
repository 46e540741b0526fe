"""Batched augmentation against torchvision's per-image ops, same parameters.

Tolerance: 1e-5 on [0, 1] float images (float rounding), for every op including downscaling crops.
"""
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from simclr import augment as A

CFG = A.AugmentConfig()


def images(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("source, out, boxes", [
    (16, 16, [[0, 0, 16, 16], [2, 3, 8, 5], [5, 1, 11, 9], [0, 8, 16, 8], [7, 7, 9, 9], [1, 0, 4, 16]]),  # upscaling
    (32, 12, [[0, 0, 32, 32], [2, 3, 28, 25], [5, 1, 20, 30], [0, 0, 24, 32], [4, 4, 20, 20], [1, 0, 31, 16]]),  # down
])
def test_resized_crop_matches_torchvision(source, out, boxes):
    x = images(size=source)
    got = A.resized_crop(x, torch.tensor(boxes), out)
    for i, (top, left, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[i], top, left, h, w, [out, out], antialias=True)
        assert torch.allclose(got[i], ref, atol=1e-5), i


@pytest.mark.parametrize("op, ref, factors", [
    (A.adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 0.7, 1.2, 0.9]),
    (A.adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4, 0.7, 1.2, 0.9]),
    (A.adjust_saturation, TF.adjust_saturation, [0.6, 1.0, 1.4, 0.7, 1.2, 0.9]),
    (A.adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.1, 0.05, -0.03, 0.08]),
])
def test_colour_ops_match_torchvision_per_sample(op, ref, factors):
    x = images()
    out = op(x.clone(), torch.tensor(factors))
    for i, f in enumerate(factors):
        assert torch.allclose(out[i], ref(x[i], f), atol=1e-5), (op.__name__, i)


def test_grayscale_matches_torchvision():
    x = images()
    assert torch.allclose(A.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)


def test_color_jitter_applies_ops_in_each_samples_order():
    x = images(n=3)
    factors = torch.tensor([[1.3, 0.7, 1.2, 0.1]] * 3)
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
    apply = torch.tensor([True, True, False])
    out = A.color_jitter(x, factors, order, apply)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(2):
        ref = x[i]
        for op in order[i].tolist():
            ref = fns[op](ref, float(factors[i, op]))
        assert torch.allclose(out[i], ref, atol=1e-5), i
    assert torch.equal(out[2], x[2])  # not applied: untouched


def test_views_have_shape_dtype_and_range():
    x = (images(n=8, size=32) * 255).to(torch.uint8)
    v1, v2 = A.two_views(x, 16, CFG, torch.Generator().manual_seed(0))
    for v in (v1, v2):
        assert v.shape == (8, 3, 16, 16) and v.dtype == torch.float32
        assert v.min() >= 0 and v.max() <= 1
    assert not torch.equal(v1, v2)


def test_each_sample_gets_its_own_random_parameters():
    g = torch.Generator().manual_seed(0)
    boxes = A.sample_crop_boxes(64, 32, 32, CFG, g, "cpu")
    assert len({tuple(b) for b in boxes.tolist()}) > 50
    assert (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 32).all() and (boxes >= 0).all()
    assert ((boxes[:, 0] + boxes[:, 2]) <= 32).all() and ((boxes[:, 1] + boxes[:, 3]) <= 32).all()
    factors, order, apply = A.sample_jitter(64, CFG, g, "cpu")
    assert len(torch.unique(factors[:, 0])) == 64
    assert len({tuple(o) for o in order.tolist()}) > 5
    assert 0.6 < apply.float().mean() < 0.95
    # the same image repeated gets different views
    same = (images(n=1, size=32) * 255).to(torch.uint8).repeat(16, 1, 1, 1)
    view = A.augment(same, 32, CFG, g)
    assert len({v.sum().item() for v in view}) == 16


def test_crop_areas_follow_the_scale_range():
    g = torch.Generator().manual_seed(1)
    boxes = A.sample_crop_boxes(4000, 32, 32, CFG, g, "cpu").float()
    area = boxes[:, 2] * boxes[:, 3] / (32 * 32)
    assert area.min() >= 0.05 and area.max() <= 1.0
    assert 0.4 < area.mean() < 0.65  # U(0.08, 1) has mean 0.54 before rejection


def test_same_generator_state_gives_same_views():
    x = (images(n=4, size=16) * 255).to(torch.uint8)
    a = A.augment(x, 16, CFG, torch.Generator().manual_seed(5))
    b = A.augment(x, 16, CFG, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.slow
def test_compiled_render_equals_eager():
    """train.compile compiles the augmentation's deterministic part; it must draw the same views."""
    x = (torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    params = A.sample_views(16, 32, 32, CFG, torch.Generator().manual_seed(4), "cpu")
    compiled = torch.compile(A.render, dynamic=False)
    assert torch.allclose(compiled(x, params, 24), A.render(x, params, 24), atol=1e-5)


def test_gathered_jitter_equals_mask_selected_jitter_and_is_the_cpu_default(monkeypatch):
    """color_jitter's two paths give the same values bit for bit; on a CPU (eager) the default runs
    each op only on the samples that take it (4 x the applied samples in all, not 16 x the batch)."""
    g = torch.Generator().manual_seed(3)
    n = 64
    x = torch.rand(n, 3, 16, 16, generator=g)
    factors, order, apply = A.sample_jitter(n, A.AugmentConfig(), g, "cpu")
    mask = A.color_jitter(x, factors, order, apply, gather=False)
    assert torch.equal(A.color_jitter(x, factors, order, apply, gather=True), mask)
    seen = []
    ops = tuple((lambda op: lambda t, f: (seen.append(len(t)), op(t, f))[1])(op) for op in A.JITTER_OPS)
    monkeypatch.setattr(A, "JITTER_OPS", ops)
    assert torch.equal(A.color_jitter(x, factors, order, apply), mask)
    assert sum(seen) == 4 * int(apply.sum()) < 16 * n
