"""Taking the trained encoder away: `from simclr import load_encoder`."""
import numpy as np
import pytest
import torch



@pytest.fixture(scope="module")
def trained(snakemade, monkeypatch_module):
    """The Snakemake run of the micro pipeline (ResNet-18 at width 8): its model file, manifest and
    extract's features, under results/ (paths in its manifest are relative to the project)."""
    monkeypatch_module.chdir(snakemade)
    results = snakemade / "results"
    return {"model": results / "models" / "simclr.pt", "manifest": results / "data" / "manifest.json",
            "features": results / "features"}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.slow
def test_the_loaded_encoder_gives_extracts_features(trained):
    from simclr import load_encoder
    from simclr.cache import load_split
    from simclr.data import read_manifest

    encoder = load_encoder(trained["model"])
    assert not encoder.training
    images, _, _ = load_split(read_manifest(trained["manifest"]), "test", encoder.info["input_size"])
    with torch.no_grad():
        h = encoder(encoder.preprocess(images)).numpy()
    extracted = np.load(trained["features"] / "simclr.npz")["test_x"]
    assert h.shape == extracted.shape == (len(images), encoder.info["feature_dim"])
    np.testing.assert_allclose(h, extracted, rtol=1e-4, atol=1e-5)
    random_init = np.load(trained["features"] / "random.npz")["test_x"]
    assert np.abs(h - random_init).max() > 1e-2  # the trained weights, not a fresh network


@pytest.mark.slow
def test_extract_compiled_gives_the_eager_features(trained, tmp_path):
    """extract.compile: torch.compile of the encoder, batches of 7 so the last one is smaller (a second
    compile), features equal to the eager run's within float32 reassociation."""
    from simclr import config
    from simclr.extract import extract

    params = config.validate_params({"extract": {"compile": True, "batch_size": 7}})
    logged = []
    extract(params, trained["manifest"], trained["model"], tmp_path, log=logged.append)
    for name in ("simclr", "random"):
        eager, compiled = np.load(trained["features"] / f"{name}.npz"), np.load(tmp_path / f"{name}.npz")
        for key in ("train_x", "test_x"):
            assert compiled[key].shape == eager[key].shape
            np.testing.assert_allclose(compiled[key], eager[key], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_the_model_file_loads_with_weights_only_and_carries_its_metadata(trained):
    import json

    from simclr import load_encoder

    raw = torch.load(trained["model"], weights_only=True)
    assert {"model", "params", "manifest_hash"} <= set(raw)
    info = load_encoder(trained["model"]).info
    manifest = json.loads(trained["manifest"].read_text())
    assert info["manifest_hash"] == manifest["content_hash"]
    assert (info["arch"], info["width"], info["input_size"], info["norm"], info["feature_dim"]) == \
        ("resnet18", 8, 8, "batch", 64)
    assert "/ 255" in info["pixels"]


def test_preprocess_resizes_like_the_pipelines_decode(tmp_path):
    """A 16 px image fed to an 8 px encoder is resized as data.decode resizes on load."""
    from conftest import write_image
    from simclr.data import decode
    from simclr.encoder import preprocess

    path = write_image(tmp_path / "img.png", seed=3, size=16)
    from PIL import Image

    big = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]
    expected = torch.tensor(decode(path, 8)).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(preprocess(big, 8), expected)
    with pytest.raises(ValueError, match="expected uint8 N x 3 x H x W"):
        preprocess(big.float(), 8)


def test_an_unreadable_model_file_is_named(tmp_path):
    from simclr import load_encoder
    from simclr.errors import UserError

    bad = tmp_path / "simclr.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match=f"{bad}: expected a model written by simclr pretrain"):
        load_encoder(bad)


def test_a_standard_width_encoder_loads_into_torchvisions_resnet18_with_the_cifar_stem():
    """README's recipe: torchvision's resnet18 with the B.9 stem takes the encoder's state dict as is."""
    import torchvision
    from torch import nn

    from simclr import config, model

    encoder = model.build(config.validate_params({"model": {"width": 64}}), 0).encoder.eval()
    with torch.no_grad():  # move every weight off its initial value (zero-initialised blocks included)
        for p in encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    net.load_state_dict(encoder.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), encoder(x), atol=1e-6)
