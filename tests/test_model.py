"""The model's knobs for the choices CIFAR-10 recipes make differently (model.head, model.head_hidden,
model.zero_init_residual): each builds what its source builds, and the default stays the official code's."""
import pytest
import torch
import torchvision
from torch import nn

from simclr import config, model


def build(**model_keys):
    params = config.validate_params({"model": {"width": 8, **model_keys}})
    return model.build(params, 0)


def test_the_default_is_the_official_v1_head_and_zero_initialised_blocks():
    net = build()
    kinds = [type(m) for m in net.head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert net.head[0].bias is None and net.head[3].bias is None and net.head[0].out_features == 64  # hidden = h
    assert not net.head[4].bias.requires_grad
    blocks = [m for m in net.encoder.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]
    assert blocks and all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)


def test_the_mlp_head_is_dkobaks_and_solo_learns():
    """dkobak/simclr-cifar10 (simclr-cifar10.py): nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 128);
    solo-learn (solo/methods/simclr.py): nn.Linear(features_dim, proj_hidden_dim), nn.ReLU(),
    nn.Linear(proj_hidden_dim, proj_output_dim). Biases, no norm layer."""
    net = build(head="mlp", head_hidden=96, proj_dim=32)
    assert [type(m) for m in net.head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (net.head[0].in_features, net.head[0].out_features) == (64, 96)
    assert (net.head[2].in_features, net.head[2].out_features) == (96, 32)
    assert net.head[0].bias is not None and net.head[2].bias is not None
    assert net(torch.rand(4, 3, 16, 16)).shape == (4, 32)


def test_zero_init_residual_off_is_torchvisions_initialisation():
    """torchvision's resnet18(weights=None) (zero_init_residual=False): every BN weight 1, bias 0; the
    convolutions kaiming-normal fan_out, so their spread matches torchvision's own draw."""
    net = build(zero_init_residual=False, width=64)
    ref = torchvision.models.resnet18(weights=None)
    for m in net.encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    ours, theirs = net.encoder.layer3[0].conv1.weight, ref.layer3[0].conv1.weight
    assert ours.shape == theirs.shape
    assert float(ours.detach().std()) == pytest.approx(float(theirs.detach().std()), rel=0.05)


def test_a_model_file_of_an_earlier_version_builds_the_official_model():
    """Model files written before these knobs carry params without them: they meant the official choices."""
    params = config.validate_params({"model": {"width": 8}})
    old = {"model": {k: v for k, v in params["model"].items()
                     if k not in ("head", "head_hidden", "zero_init_residual")}, "train": params["train"]}
    a, b = model.build(old, 0), model.build(params, 0)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
