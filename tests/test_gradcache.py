"""Exact mode (gradient caching) gives the full-batch gradient; naive mode is a different objective;
chunked forwards never hold both views of an image (no batch-norm leakage)."""
import copy

import pytest
import torch
from torch import nn

from conftest import relative_error
from simclr.accumulate import step_gradients
from simclr.losses import nt_xent
from simclr.model import SimCLR

B, T = 7, 0.5  # a batch that does not divide evenly by chunk 3


def views(seed=0, n=B, size=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, dtype=dtype), torch.rand(n, 3, size, size, generator=g, dtype=dtype)


def grads(net):
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.requires_grad])


def reference_nt_xent(z1, z2, t):
    """NT-Xent written out from eq. 1 of the paper, anchor by anchor, in float64: an implementation
    independent of simclr.losses (no cross_entropy, no masking tricks). The official scale: the sum over
    the 2N anchors divided by N (loss_a + loss_b)."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    total = 0
    for i in range(n2):
        j = (i + n2 // 2) % n2  # the positive
        sims = torch.stack([z[i] @ z[k] / t for k in range(n2) if k != i])
        total = total - (z[i] @ z[j] / t - torch.logsumexp(sims, 0))
    return total / (n2 // 2)


def direct_grads(net, v1, v2, scale=1.0):
    """Gradient of scale x NT-Xent (the independent float64 reference) over the whole of v1, v2 in one pass."""
    net.zero_grad()
    z = net(torch.cat([v1, v2]))
    (reference_nt_xent(z[:len(v1)], z[len(v1):], T) * scale).backward()
    return grads(net).clone()


def test_the_reference_is_the_loss_in_float64():
    z1, z2 = views(9, n=5)[0].flatten(1), views(10, n=5)[0].flatten(1)
    assert nt_xent(z1, z2, T).dtype == torch.float64  # float64 in, float64 computed
    assert float(nt_xent(z1, z2, T)) == pytest.approx(float(reference_nt_xent(z1, z2, T)), rel=1e-13)


class Tiny(nn.Module):
    """Conv-norm-ReLU-pool-Linear: small enough for float64 checks in milliseconds."""

    def __init__(self, norm):
        super().__init__()
        layer = nn.BatchNorm2d(8) if norm == "batch" else nn.GroupNorm(2, 8)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), layer, nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, 16)

    def forward(self, x):
        return self.head(self.body(x))


def model(norm):
    torch.manual_seed(0)
    return Tiny(norm).double()


rel_err = relative_error


def test_one_chunk_is_the_plain_full_batch_step():
    net = model("group")
    v1, v2 = views()
    reference = direct_grads(net, v1, v2)
    for accumulate in ("naive", "exact"):
        net.zero_grad()
        step_gradients(net, v1, v2, T, B, accumulate)
        assert rel_err(grads(net), reference) < 1e-10, accumulate


@pytest.mark.parametrize("chunk", [1, 3, B - 1])
def test_exact_equals_full_batch_without_batchnorm(chunk):
    net = model("group")
    v1, v2 = views()
    reference = direct_grads(net, v1, v2)
    net.zero_grad()
    step_gradients(net, v1, v2, T, chunk, "exact")
    assert rel_err(grads(net), reference) < 1e-10


@pytest.mark.parametrize("chunk", [1, 3])
def test_exact_equals_full_batch_with_batchnorm_in_eval_mode(chunk):
    net = model("batch").eval()
    v1, v2 = views(1)
    reference = direct_grads(net, v1, v2)
    net.zero_grad()
    step_gradients(net, v1, v2, T, chunk, "exact")
    assert rel_err(grads(net), reference) < 1e-10


def test_exact_loss_is_the_full_batch_loss():
    net = model("group")
    v1, v2 = views(2)
    with torch.no_grad():
        z = net(torch.cat([v1, v2]))
        full = float(nt_xent(z[:B], z[B:], T))
    assert float(step_gradients(net, v1, v2, T, 3, "exact")) == pytest.approx(full, rel=1e-12)


def test_naive_is_the_size_weighted_mean_of_chunk_losses_and_differs_from_exact():
    net = model("group")
    v1, v2 = views(3, n=B)
    chunks = [(0, 3), (3, 6), (6, 7)]  # chunk 3 of 7 images: sizes 3, 3, 1
    weighted = sum(direct_grads(net, v1[a:e], v2[a:e], scale=(e - a) / B) for a, e in chunks)
    plain = sum(direct_grads(net, v1[a:e], v2[a:e], scale=1 / len(chunks)) for a, e in chunks)
    assert rel_err(plain, weighted) > 0.05  # the two readings of "mean" really differ here
    net.zero_grad()
    step_gradients(net, v1, v2, T, 3, "naive")
    naive = grads(net).clone()
    assert rel_err(naive, weighted) < 1e-10
    net.zero_grad()
    step_gradients(net, v1, v2, T, 3, "exact")
    assert rel_err(naive, grads(net)) > 0.05  # a measurably different gradient


def paired_forwards(net, v1, v2, chunk):
    """The embeddings of leak-free chunking written out on its own: forward k holds the first views of
    group k and the second views of group k + 1 (mod K); returns both views' embeddings per group."""
    bounds = [(a, min(a + chunk, len(v1))) for a in range(0, len(v1), chunk)]
    z1, z2 = [None] * len(bounds), [None] * len(bounds)
    for k, (a, e) in enumerate(bounds):
        nxt = (k + 1) % len(bounds)
        c, d = bounds[nxt]
        z = net(torch.cat([v1[a:e], v2[c:d]]))
        z1[k], z2[nxt] = z[:e - a], z[e - a:]
    return bounds, z1, z2


@pytest.mark.parametrize("accumulate", ["exact", "naive"])
@pytest.mark.parametrize("chunk", [2, 3, 4])  # 1: BN over two samples has no gradient
def test_batchnorm_in_train_mode_gets_the_gradient_of_the_leak_free_forwards(chunk, accumulate):
    """With batch statistics, exact is the gradient of the full-batch loss through the paired forwards
    and naive that of the size-weighted group losses (float64, against the independent reference)."""
    net = model("batch").train()
    ref = copy.deepcopy(net)
    v1, v2 = views(8)
    bounds, z1, z2 = paired_forwards(ref, v1, v2, chunk)
    if accumulate == "exact":
        loss = reference_nt_xent(torch.cat(z1), torch.cat(z2), T)
    else:
        loss = sum(reference_nt_xent(a1, a2, T) * ((e - a) / B) for (a, e), a1, a2 in zip(bounds, z1, z2))
    loss.backward()
    got = step_gradients(net, v1, v2, T, chunk, accumulate)
    assert float(got) == pytest.approx(float(loss.detach()), rel=1e-12)
    assert rel_err(grads(net), grads(ref)) < 1e-10


class Recorder(nn.Module):
    """Remembers every batch the wrapped network is given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.net(x)


@pytest.mark.parametrize("accumulate", ["exact", "naive"])
@pytest.mark.parametrize("chunk", [1, 2, 3, B - 1])
def test_no_forward_pass_holds_both_views_of_an_image(chunk, accumulate):
    net = Recorder(model("batch").train())
    v1 = torch.arange(1, B + 1, dtype=torch.float64).view(B, 1, 1, 1).expand(B, 3, 8, 8).contiguous()
    v2 = -v1  # pixel value +i: first view of image i; -i: its second view
    step_gradients(net, v1, v2, T, chunk, accumulate)
    passes = net.inputs[:len(net.inputs) // 2]  # the second half replays the first with a graph
    assert [torch.equal(a, b) for a, b in zip(passes, net.inputs[len(passes):])] == [True] * len(passes)
    seen = []
    for x in passes:
        ids = x[:, 0, 0, 0].long().tolist()
        first, second = {i for i in ids if i > 0}, {-i for i in ids if i < 0}
        assert not first & second, f"a forward pass holds both views of images {first & second}"
        seen += ids
    assert sorted(seen) == sorted(list(range(1, B + 1)) + list(range(-B, 0)))  # every view embedded once


def test_batchnorm_statistics_updated_once_per_chunk():
    net = model("batch").train()
    reference = model("batch").train()
    v1, v2 = views(4)
    step_gradients(net, v1, v2, T, 3, "exact")
    with torch.no_grad():
        paired_forwards(reference, v1, v2, 3)
    bn = [(n, b) for n, b in net.named_buffers()]
    ref = dict(reference.named_buffers())
    assert bn and all(torch.allclose(b, ref[n], rtol=0, atol=1e-12) for n, b in bn), \
        [n for n, b in bn if not torch.allclose(b, ref[n])]
    assert int(dict(net.named_buffers())["body.1.num_batches_tracked"]) == 3


def test_exact_equals_full_batch_on_the_real_encoder():
    torch.manual_seed(0)
    net = SimCLR("resnet18", proj_dim=16, norm="group").double()
    v1, v2 = views(7, n=5)
    reference = direct_grads(net, v1, v2)
    net.zero_grad()
    step_gradients(net, v1, v2, T, 2, "exact")
    assert rel_err(grads(net), reference) < 1e-10


class RecordingDropout(nn.Dropout):
    def __init__(self):
        super().__init__(p=0.5)
        self.outputs = []

    def forward(self, x):
        out = super().forward(x)
        self.outputs.append(out.detach().clone())
        return out


def test_randomness_inside_the_model_is_replayed_in_the_second_pass():
    net = model("group")
    drop = RecordingDropout()
    net.head = nn.Sequential(drop, net.head)
    v1, v2 = views(5)
    step_gradients(net, v1, v2, T, 3, "exact")
    first, second = drop.outputs[:3], drop.outputs[3:]
    assert len(second) == 3
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_exact_mode_runs_under_bf16_autocast():
    net = model("group").float()
    v1, v2 = views(6, dtype=torch.float32)
    loss = step_gradients(net, v1, v2, T, 3, "exact", precision="bf16")
    assert torch.isfinite(loss) and torch.isfinite(grads(net)).all()
    net.zero_grad()
    step_gradients(net, v1, v2, T, B, "naive", precision="fp32")
    fp32 = grads(net).clone()
    net.zero_grad()
    step_gradients(net, v1, v2, T, 3, "exact", precision="bf16")
    bf16 = grads(net)
    assert torch.nn.functional.cosine_similarity(bf16, fp32, dim=0) > 0.99  # bf16 rounding, same gradient


@pytest.mark.parametrize("accumulate", ["exact", "naive"])
@pytest.mark.parametrize("chunk", [B, 3])
def test_separate_forward_views_normalise_each_view_on_its_own(chunk, accumulate):
    """train.forward_views separate (dkobak/simclr-cifar10: model(view1), model(view2)): whole, the two
    views are two forwards of N; in chunks, group k's first views and group k + 1's second views are
    two forwards. The gradient is that of the loss through exactly those forwards (float64, BN in train
    mode, against the independent reference), and differs from the joint forward's."""
    net, joint = model("batch").train(), model("batch").train()
    ref = copy.deepcopy(net)
    v1, v2 = views(11)
    bounds = [(a, min(a + chunk, B)) for a in range(0, B, chunk)]
    z1 = [ref(v1[a:e]) for a, e in bounds]
    z2 = [None] * len(bounds)
    for k in range(len(bounds)):  # group k+1's second views are embedded with group k's first views
        c, d = bounds[(k + 1) % len(bounds)]
        z2[(k + 1) % len(bounds)] = ref(v2[c:d])
    if accumulate == "exact" or len(bounds) == 1:
        loss = reference_nt_xent(torch.cat(z1), torch.cat(z2), T)
    else:
        loss = sum(reference_nt_xent(a1, a2, T) * ((e - a) / B) for (a, e), a1, a2 in zip(bounds, z1, z2))
    loss.backward()
    got = step_gradients(net, v1, v2, T, chunk, accumulate, forward_views="separate")
    assert float(got) == pytest.approx(float(loss.detach()), rel=1e-12)
    assert rel_err(grads(net), grads(ref)) < 1e-10
    step_gradients(joint, v1, v2, T, chunk, accumulate)
    assert rel_err(grads(joint), grads(net)) > 1e-3


@pytest.mark.parametrize("chunk", [B, 3])
def test_separate_forward_views_hold_one_view_per_forward(chunk):
    net = Recorder(model("batch").train())
    v1 = torch.arange(1, B + 1, dtype=torch.float64).view(B, 1, 1, 1).expand(B, 3, 8, 8).contiguous()
    step_gradients(net, v1, -v1, T, chunk, "exact", forward_views="separate")
    for x in net.inputs:
        signs = set(torch.sign(x[:, 0, 0, 0]).tolist())
        assert len(signs) == 1, "a forward pass holds views of both kinds"
