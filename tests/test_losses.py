import math

import torch

from simclr.losses import nt_xent


def direct_nt_xent(z1, z2, t):
    """Eq. 1 of the paper written out anchor by anchor, summed over the 2N anchors and divided by N:
    the official code's loss_a + loss_b (each a mean over the N anchors of one view)."""
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        num = math.exp(float(z[i] @ z[j]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n


def test_matches_direct_formula_on_hand_made_case():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[2.0, 0.5], [-1.0, 1.0], [0.5, 1.5]], dtype=torch.float64)
    for t in (0.1, 0.5, 1.0):
        assert math.isclose(float(nt_xent(z1, z2, t)), direct_nt_xent(z1, z2, t), rel_tol=1e-6)


def test_matches_direct_formula_random():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert math.isclose(float(nt_xent(z1, z2, 0.5)), direct_nt_xent(z1, z2, 0.5), rel_tol=1e-5)


def test_symmetric_in_the_two_views():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert torch.allclose(nt_xent(z1, z2, 0.5), nt_xent(z2, z1, 0.5))


def test_perfect_pairs_beat_random_pairs():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(8, 16, generator=g)
    assert nt_xent(z1, z1, 0.1) < nt_xent(z1, torch.randn(8, 16, generator=g), 0.1)


def test_loss_falls_under_gradient_steps():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(16, 8, generator=g, requires_grad=True)
    z2 = torch.randn(16, 8, generator=g, requires_grad=True)
    opt = torch.optim.SGD([z1, z2], lr=0.5)
    first = float(nt_xent(z1, z2, 0.5).detach())
    for _ in range(50):
        opt.zero_grad()
        nt_xent(z1, z2, 0.5).backward()
        opt.step()
    assert float(nt_xent(z1, z2, 0.5).detach()) < first - 0.5
