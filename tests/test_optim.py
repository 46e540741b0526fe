import math

import pytest
import torch
from torch import nn

from simclr.optim import LARS, lr_at, param_groups


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_param_groups_put_bias_and_bn_in_excluded_group():
    m = make_model()
    decay, exclude = param_groups(m, 1e-4)
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert {id(p) for p in exclude["params"]} == {id(m[0].bias), id(m[1].weight), id(m[1].bias)}
    assert exclude["weight_decay"] == 0 and exclude["lars_exclude"]


def test_lars_scales_weights_by_trust_ratio_and_skips_bias_and_bn():
    m = make_model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.5)
    wd, eta, lr = 0.1, 0.001, 1.0
    LARS(param_groups(m, wd), lr=lr, momentum=0.9, trust_coefficient=eta).step()
    for name, p in m.named_parameters():
        g = torch.full_like(p, 0.5)
        if name == "0.weight":
            d = g + wd * before[name]
            expected = before[name] - lr * eta * before[name].norm() / d.norm() * d
        else:  # bias and BN: plain step, no weight decay, no trust ratio
            expected = before[name] - lr * g
        assert torch.allclose(p, expected, atol=1e-7), name


def test_lars_momentum_accumulates():
    p = nn.Parameter(torch.ones(2))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars_exclude": True}], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = torch.ones(2)
        opt.step()
    assert torch.allclose(p, torch.ones(2) - 0.1 * 1 - 0.1 * 1.9)


@pytest.mark.parametrize("warmup", [0, 5])
def test_schedule_endpoints(warmup):
    total, peak = 50, 2.0
    lrs = [lr_at(s, total, warmup, peak) for s in range(total)]
    if warmup:
        assert lrs[0] == pytest.approx(peak / warmup)
        assert lrs[warmup - 1] == pytest.approx(peak)
        assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert lrs[warmup] == pytest.approx(peak)
    assert lr_at(total, total, warmup, peak) == pytest.approx(0.0, abs=1e-12)
    after = lrs[warmup:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(0.5 * peak * (1 + math.cos(math.pi * (mid - warmup) / (total - warmup))))


def textbook_lars(params, grads_per_step, lr, momentum, wd, eta):
    """The paper's LARS written out one parameter at a time (the formula, not the implementation under test)."""
    params = [p.detach().clone() for p in params]
    bufs = [None] * len(params)
    for grads in grads_per_step:
        for i, (p, g) in enumerate(zip(params, grads)):
            if p.ndim > 1:  # adapted and decayed
                d = g + wd * p
                d = d * (eta * p.norm() / d.norm())
            else:
                d = g
            bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
            p -= lr * bufs[i]
    return params


def test_lars_equals_the_textbook_formula_over_several_steps():
    m = make_model()
    start = [p.detach().clone() for p in m.parameters()]
    g = torch.Generator().manual_seed(1)
    steps = [[torch.randn(p.shape, generator=g) for p in m.parameters()] for _ in range(3)]
    eta = 5.0
    opt = LARS(param_groups(m, 0.01), lr=0.1, momentum=0.9, trust_coefficient=eta)
    for grads in steps:
        for p, gr in zip(m.parameters(), grads):
            p.grad = gr.clone()
        opt.step()
    expected = textbook_lars(start, steps, 0.1, 0.9, 0.01, eta)
    for p, e in zip(m.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)


def solo_learn_lars(params, grads_per_step, lrs, momentum, wd, eta, eps=1e-8, clip=lambda t, lr: min(t / lr, 1)):
    """An independent transcription of one solo-learn LARS step per lr in `lrs` (solo/utils/lars.py,
    copied there from Lightning Bolts; vturrisi/solo-learn, with clip_lr=True, exclude_bias_n_norm=True
    as scripts/pretrain/cifar/simclr.yaml sets them): per parameter, with Python floats for the norms."""
    params = [p.detach().clone() for p in params]
    bufs = [None] * len(params)
    for grads, lr in zip(grads_per_step, lrs):
        for i, (p, g) in enumerate(zip(params, grads)):
            d_p = g
            p_norm, g_norm = float(p.norm()), float(g.norm())
            if p.ndim != 1 and p_norm != 0 and g_norm != 0:  # biases and norms: neither LARS nor decay
                lars_lr = eta * p_norm / (g_norm + p_norm * wd + eps)
                lars_lr = clip(lars_lr, lr)  # clip_lr: min(lars_lr / lr, 1)
                d_p = (d_p + wd * p) * lars_lr
            bufs[i] = d_p.clone() if bufs[i] is None else bufs[i] * momentum + d_p
            p -= lr * bufs[i]
    return params


def two_sided_model():
    """Two weight layers: one whose trust ratio stays above the lr (the clip binds: multiplier 1), one
    below it (multiplier trust / lr), plus a bias and a BN."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 4, bias=False))
    with torch.no_grad():
        m[0].weight.mul_(100.0)   # large weights, trust ratio high
        m[2].weight.mul_(0.01)   # small weights, trust ratio low
    return m


def test_clipped_lars_takes_solo_learns_steps_at_the_converted_loss_scale():
    """configs/cifar10-resnet18.yaml's conversion: the loss here (loss_a + loss_b) is twice solo-learn's
    mean over 2N anchors, so every gradient is doubled; lr / 2 and weight decay x 2 with eta unchanged
    give solo-learn's updates (the clip compares trust with lr, and both halve). Several steps of a
    warm-up, with momentum, layers on both sides of the clip."""
    lr, wd, eta, momentum = 0.4, 1e-4, 0.02, 0.9
    lrs = [lr * (k + 1) / 4 for k in range(4)] + [lr * 0.9, lr * 0.7]  # warm-up, then decaying
    m = two_sided_model()
    start = [p.detach().clone() for p in m.parameters()]
    g = torch.Generator().manual_seed(2)
    steps = [[torch.randn(p.shape, generator=g) * 0.5 for p in m.parameters()] for _ in lrs]
    trust = [eta * float(w.norm()) / (float(gr.norm()) + wd * float(w.norm())) for w, gr in zip(start, steps[0])]
    assert trust[0] > 2 * max(lrs) and trust[3] < min(lrs) / 2  # one layer clipped at every step, one never
    opt = LARS(param_groups(m, 2 * wd), lr=lr / 2, momentum=momentum, trust_coefficient=eta, clip_lr=True,
               denominator="separate")
    for grads, step_lr in zip(steps, lrs):
        for group in opt.param_groups:
            group["lr"] = step_lr / 2
        for p, gr in zip(m.parameters(), grads):
            p.grad = 2 * gr
        opt.step()
    expected = solo_learn_lars(start, steps, lrs, momentum, wd, eta)
    for (name, p), e in zip(m.named_parameters(), expected):
        assert torch.allclose(p, e, rtol=1e-5, atol=1e-7), name
    # the clip this project had before, lr x min(trust, 1), takes other steps: the comparison can fail
    before = solo_learn_lars(start, steps, lrs, momentum, wd, eta, clip=lambda t, lr: min(t, 1))
    assert not torch.allclose(before[0], expected[0], rtol=1e-3)


def test_lars_zero_norm_layer_takes_the_plain_gradient_step_in_solo_learns_form():
    p = nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.ones(2, 2)
    LARS([{"params": [p], "weight_decay": 0.5, "lars_exclude": False}], lr=0.1, momentum=0.9,
         clip_lr=True, denominator="separate").step()
    assert torch.allclose(p, torch.full((2, 2), -0.1))


def test_decay_norm_bias_decays_every_parameter_as_torch_sgd_does():
    """dkobak/simclr-cifar10: torch.optim.SGD(model.parameters(), weight_decay=...) decays all of them."""
    m, ref = make_model(), make_model()
    for p, q in zip(m.parameters(), ref.parameters()):
        p.grad = torch.full_like(p, 0.5)
        q.grad = torch.full_like(q, 0.5)
    torch.optim.SGD(param_groups(m, 1e-2, decay_norm_bias=True), lr=0.1, momentum=0.9).step()
    torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2).step()
    for p, q in zip(m.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    groups = param_groups(make_model(), 1e-2)
    assert groups[1]["weight_decay"] == 0.0  # the default: weights only
