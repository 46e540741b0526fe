"""Data at scale: the unlabelled split, the memory-mapped decode cache, the streamed training feed,
the stored size, the ImageNet stem and the Gaussian blur."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT, assert_same_weights, make_layout, micro_params_yaml, write_image
from simclr import augment as aug, cache, config, model as model_lib
from simclr.data import LayoutError, layout_hash, read_classes
from simclr.validate import check


def with_unlabelled(root, n=6, size=8, nested=False):
    for k in range(n):
        write_image(root / "unlabelled" / (f"part{k % 2}/" if nested else "") / f"u{k:03d}.png", 1000 + k, size)
    return root


@pytest.fixture
def stl_like(tmp_path):
    return with_unlabelled(make_layout(tmp_path / "ds"), nested=True)


def test_validate_checks_hashes_and_records_the_unlabelled_split(stl_like, tmp_path):
    m = check(stl_like).manifest
    u = m["splits"]["unlabelled"]
    assert u["images"] == 6 and u["sizes"] == {"8x8": 6} and len(u["content_hash"]) == 64
    assert m["content_hash"] == layout_hash(stl_like, read_classes(stl_like))
    # a layout without unlabelled/ hashes as it did before the split existed: its hash is unchanged
    plain = make_layout(tmp_path / "plain")
    assert check(plain).manifest["content_hash"] == layout_hash(plain, read_classes(plain))
    # an unlabelled image changes the dataset's hash and only the unlabelled split's own hash
    before = m
    write_image(stl_like / "unlabelled" / "part0" / "u000.png", 5, 8)
    after = check(stl_like).manifest
    assert after["content_hash"] != before["content_hash"]
    assert after["splits"]["train"]["content_hash"] == before["splits"]["train"]["content_hash"]
    assert after["splits"]["unlabelled"]["content_hash"] != before["splits"]["unlabelled"]["content_hash"]


def test_unlabelled_problems_are_named_like_the_other_splits(stl_like):
    (stl_like / "unlabelled" / "cat").mkdir()
    write_image(stl_like / "unlabelled" / "cat" / "x.png", 77, 8)
    (stl_like / "unlabelled" / "broken.png").write_bytes(b"not a png")
    report = check(stl_like)
    assert report.manifest is None
    assert any(e.startswith(f"{stl_like / 'unlabelled' / 'cat'}: folder named like class 'cat' (class.txt line 1) "
                            "inside unlabelled/") for e in report.errors), report.errors
    assert f"{stl_like / 'unlabelled' / 'broken.png'}: not an image (Pillow cannot identify the content)" in report.errors


def test_an_empty_unlabelled_folder_is_an_error(tmp_path):
    root = make_layout(tmp_path / "ds")
    (root / "unlabelled").mkdir()
    assert check(root).errors == [f"{root / 'unlabelled'}: unlabelled split has no images (add images or remove the folder)"]


def test_a_stale_or_foreign_cache_entry_is_rebuilt_never_trusted(stl_like, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / "cache"))
    m = check(stl_like).manifest
    images, labels, _ = cache.load_split(m, "unlabelled", 8)
    assert labels.tolist() == [-1] * 6
    good = images.clone()
    path = cache.entry(m, "unlabelled", 8, False)
    # the previous format's entry (torch.save of a dict) is never read, even where it names this split
    torch.save({"images": torch.zeros(6, 3, 8, 8, dtype=torch.uint8)}, path.with_name(path.name.replace("-v2.npy", ".pt")))
    # an entry of another shape (an older layout, a torn write) and one that is not a .npy
    for damage in (lambda: np.save(path, np.zeros((6, 3, 4, 4), np.uint8)), lambda: path.write_bytes(b"\x93NUMPY junk")):
        damage()
        again, _, _ = cache.load_split(m, "unlabelled", 8)
        assert torch.equal(again, good)


@pytest.mark.slow
def test_one_process_builds_the_entry_while_another_waits(stl_like, tmp_path):
    """Two processes ask for the same entry at once (DDP ranks, two stages): one decodes, both map it."""
    m = check(stl_like).manifest
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(m))
    code = ("import json, sys, simclr.cache as c\n"
            "real = c._decode_all\n"
            "def counted(*a):\n"
            "    print('decoded', flush=True)\n"
            "    import time; time.sleep(1.0)\n"
            "    return real(*a)\n"
            "c._decode_all = counted\n"
            "x, _, _ = c.load_split(json.load(open(sys.argv[1])), 'train', 8)\n"
            "print(int(x.sum()))\n")
    env = {"SIMCLR_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(manifest)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert sum(o.count("decoded") for o in outs) == 1, outs
    assert outs[0][-1] == outs[1][-1]


def test_the_pool_decodes_what_one_process_decodes(tmp_path, monkeypatch):
    root = make_layout(tmp_path / "ds", per_class=4, size=12)
    m = check(root).manifest
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / "one"))
    one, _, _ = cache.load_split(m, "train", 8, crop=True)
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / "pool"))
    monkeypatch.setattr(cache, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(cache, "workers", lambda: 2)
    pooled, _, _ = cache.load_split(m, "train", 8, crop=True)
    assert torch.equal(one, pooled)


def test_a_file_changed_since_validate_is_refused_while_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / "cache"))
    root = make_layout(tmp_path / "ds")
    m = check(root).manifest
    write_image(root / "train" / "dog" / "001.png", 999, 8)  # same name and count, other bytes
    with pytest.raises(LayoutError, match=r"train: its files changed since validate"):
        cache.load_split(m, "train", 8)
    assert not list((tmp_path / "cache").glob("*.npy"))  # nothing half-written is left as an entry


def test_stored_size_keeps_the_aspect_and_crops_the_centre(tmp_path):
    from simclr.data import decode

    img = np.zeros((40, 80, 3), np.uint8)  # 80 wide, 40 high: a centre square of 40 x 40
    img[:, 20:60] = 200
    Image.fromarray(img).save(tmp_path / "wide.png")
    stored = decode(tmp_path / "wide.png", 20, crop=True)
    assert stored.shape == (20, 20, 3) and stored[:, 1:-1].min() == 200 and stored.min() > 150  # the centre only
    squashed = decode(tmp_path / "wide.png", 20)
    assert squashed.min() == 0  # the old decode squashes the whole picture in
    import torchvision.transforms as T
    want = np.asarray(T.CenterCrop(20)(T.Resize(20)(Image.fromarray(img))))
    assert np.abs(stored.astype(int) - want.astype(int)).max() <= 1


def pretrain_run(tmp_path, root, name, **overrides):
    from simclr.pretrain import pretrain

    (tmp_path / "params.yaml").write_text(micro_params_yaml(**{"train.knn_every": 0, **overrides}))
    params = config.load_params(tmp_path / "params.yaml")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(check(root).manifest))
    logs = []
    pretrain(params, manifest, tmp_path / f"{name}.pt", tmp_path / f"live-{name}", tmp_path / f"ckpt-{name}",
             log=logs.append)
    return torch.load(tmp_path / f"{name}.pt", weights_only=True)["model"], logs


def test_a_streamed_run_trains_the_weights_of_a_resident_run(stl_like, tmp_path):
    common = {"train.batch_size": 8, "train.epochs": 2, "train.chunk_size": None, "train.accumulate": "naive"}
    resident, logs_r = pretrain_run(tmp_path, stl_like, "resident", **common, **{"runtime.resident_mib": 1024})
    streamed, logs_s = pretrain_run(tmp_path, stl_like, "streamed", **common, **{"runtime.resident_mib": 0})
    assert any("train + unlabelled; resident on cpu" in line for line in logs_r), logs_r
    assert any("train + unlabelled; streamed to cpu" in line for line in logs_s), logs_s
    assert any(line.startswith("pretrain: 15 images") for line in logs_s)  # 9 train + 6 unlabelled
    assert_same_weights(streamed, resident)


def test_train_splits_picks_what_pretrain_trains_on(stl_like, tmp_path):
    _, logs = pretrain_run(tmp_path, stl_like, "u", **{"train.splits": "unlabelled", "train.batch_size": 6,
                                                        "train.chunk_size": None})
    assert any(line.startswith("pretrain: 6 images (unlabelled;") for line in logs), logs
    plain = make_layout(tmp_path / "plain")
    with pytest.raises(LayoutError.__mro__[1], match=r"train.splits: expected an unlabelled/ split to pretrain on"):
        pretrain_run(tmp_path, plain, "none", **{"train.splits": "unlabelled"})


def test_the_imagenet_stem_is_torchvisions():
    from torchvision.models import resnet18

    net = model_lib.ResNet("resnet18", stem="imagenet")
    ref = resnet18()
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == (ref.conv1.kernel_size, ref.conv1.stride, ref.conv1.padding)
    assert repr(net.maxpool) == repr(ref.maxpool)
    net.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.rand(2, 3, 64, 64)
    ref.fc = torch.nn.Identity()
    net.eval(), ref.eval()
    assert torch.allclose(net(x), ref(x), atol=1e-5)
    cifar = model_lib.ResNet("resnet18")
    assert isinstance(cifar.maxpool, torch.nn.Identity) and cifar.conv1.kernel_size == (3, 3)
    assert cifar.state_dict().keys() == net.state_dict().keys()  # same names: model files stay readable


def test_blur_is_torchvisions_gaussian_blur_image_by_image():
    import torchvision.transforms.functional as F

    x = torch.rand(4, 3, 96, 96)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    k = aug.blur_kernel_size(96)
    assert k == 9  # 96 // 10 = 9, radius 4: the official code's height // 10, made odd
    assert aug.blur_kernel_size(224) == 23 and aug.blur_kernel_size(32) == 3
    ours = aug.gaussian_blur(x, sigma)
    for i in range(4):
        want = F.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2)
        assert torch.allclose(ours[i], want, atol=1e-5), i


def test_blur_draws_follow_torchvisions_gaussian_blur_distribution():
    """p 0.5 and sigma ~ U[0.1, 2.0] per view (torchvision's GaussianBlur(sigma=(0.1, 2.0)).get_params
    draws uniformly in that range), and a config without blur draws nothing more than before."""
    cfg = aug.AugmentConfig(blur_p=0.5)
    p = aug.sample_views(20000, 32, 32, cfg, torch.Generator().manual_seed(0), "cpu")
    assert abs(p["blur"].float().mean().item() - 0.5) < 0.02
    s = p["sigma"]
    assert 0.1 <= s.min() and s.max() <= 2.0 and abs(s.mean().item() - 1.05) < 0.02 and abs(s.std().item() - 1.9 / 12 ** 0.5) < 0.02
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    off = aug.sample_views(8, 32, 32, aug.AugmentConfig(), g1, "cpu")
    assert "blur" not in off
    aug.sample_views(8, 32, 32, aug.AugmentConfig(), g2, "cpu")
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_blur_paths_agree_and_only_blurred_views_change():
    cfg = aug.AugmentConfig(blur_p=0.5)
    imgs = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    p = aug.sample_views(16, 32, 32, cfg, torch.Generator().manual_seed(3), "cpu")
    gathered = aug.render(imgs, p, 32, gather=True)
    masked = aug.render(imgs, p, 32, gather=False)
    assert torch.allclose(gathered, masked, atol=1e-6)
    plain = aug.render(imgs, {k: v for k, v in p.items() if k not in ("blur", "sigma")}, 32)
    changed = (gathered - plain).abs().flatten(1).amax(1) > 0
    assert torch.equal(changed, p["blur"])
