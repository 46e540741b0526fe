"""Files the pipeline reads cannot run code (issue: a checkpoint in a shared cache, a tampered CIFAR-10
archive, a model file or features from someone else). Each reader gets a crafted file whose unpickling
would create a marker file: the stage refuses it, naming the file, and the marker never appears."""
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch

from conftest import prepare_micro, run_cli
from test_prepare import cifar_tarball, write_params

pytestmark = pytest.mark.slow  # real `simclr` subprocesses


class Plant:
    """Unpickling this opens (creates) `marker`: what a malicious pickle could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def one_error_line(proc, *names):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    base, params = prepare_micro(tmp_path_factory.mktemp("hostile"))
    run_cli("pretrain", "--manifest", base / "manifest.json", "--model", base / "simclr.pt", "--live-dir",
            base / "live", "--checkpoint-dir", base / "ckpt", "--params", params, check=True)
    run_cli("extract", "--manifest", base / "manifest.json", "--model", base / "simclr.pt", "--out-dir",
            base / "features", "--params", params, check=True)
    return base, params


def test_a_crafted_checkpoint_is_refused_by_name_and_runs_nothing(micro, tmp_path):
    base, params = micro
    marker, ckpt = tmp_path / "marker", tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"fingerprint": "x", "run": {}, "planted": Plant(marker)}, ckpt / "last.pt")
    proc = run_cli("pretrain", "--manifest", base / "manifest.json", "--model", tmp_path / "m.pt", "--live-dir",
                   tmp_path / "live", "--checkpoint-dir", ckpt, "--params", params)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"warning: {ckpt / 'last.pt'}: unreadable checkpoint" in proc.stdout + proc.stderr
    assert not marker.exists()


def test_a_crafted_cifar10_batch_is_refused_naming_the_member(tmp_path):
    archive = cifar_tarball(tmp_path / "cifar.tar.gz")
    marker = tmp_path / "marker"
    planted = tmp_path / "planted.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(planted, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("test_batch"):
                data = pickle.dumps({b"data": Plant(marker), b"labels": list(range(10))})
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    params = write_params(tmp_path, **{"data.source": "cifar10", "data.cifar10_archive": str(planted)})
    proc = run_cli("prepare", "--params", params, "--out", tmp_path / "out")
    line = one_error_line(proc, planted, "cifar-10-batches-py/test_batch")
    assert "refused to build io.open" in line and not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch, expected", [
    ({b"labels": [0]}, "expected a dict with b'data' and b'labels', found [b'labels']"),
    ({b"data": np.zeros((10, 1024), np.uint8), b"labels": list(range(10))}, "found uint8 (10, 1024)"),
    ({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}, "expected b'labels' as 10 integers in 0..9"),
])
def test_a_cifar10_batch_of_another_shape_is_one_line_naming_it(tmp_path, batch, expected):
    archive = cifar_tarball(tmp_path / "cifar.tar.gz")
    odd = tmp_path / "odd.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(odd, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("test_batch"):
                data = pickle.dumps(batch)
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    params = write_params(tmp_path, **{"data.source": "cifar10", "data.cifar10_archive": str(odd)})
    proc = run_cli("prepare", "--params", params, "--out", tmp_path / "out")
    assert expected in one_error_line(proc, odd, "test_batch")


def test_a_crafted_model_file_is_refused_by_name(micro, tmp_path):
    base, params = micro
    marker, model = tmp_path / "marker", tmp_path / "simclr.pt"
    torch.save({"model": {}, "params": {}, "manifest_hash": "x", "planted": Plant(marker)}, model)
    proc = run_cli("extract", "--manifest", base / "manifest.json", "--model", model, "--out-dir",
                   tmp_path / "features", "--params", params)
    one_error_line(proc, model)
    assert not marker.exists() and not (tmp_path / "features").exists()


def test_crafted_features_are_refused_by_name(micro, tmp_path):
    base, params = micro
    marker, features = tmp_path / "marker", tmp_path / "features"
    features.mkdir()
    for name in ("simclr", "random"):
        good = dict(np.load(base / "features" / f"{name}.npz"))
        good["classes"] = np.array([Plant(marker)], dtype=object)  # np.savez pickles object arrays
        np.savez(features / f"{name}.npz", **good)
    proc = run_cli("probe", "--features-dir", features, "--metrics", tmp_path / "probe.json", "--plots-dir",
                   tmp_path / "plots", "--params", params)
    one_error_line(proc, features / "simclr.npz")
    assert not marker.exists() and not (tmp_path / "probe.json").exists()


def test_a_crafted_decode_cache_entry_is_never_unpickled_and_is_rebuilt(micro, tmp_path, monkeypatch):
    base, params = micro
    cache = tmp_path / "cache"
    monkeypatch.setenv("SIMCLR_CACHE", str(cache))
    manifest = json.loads((base / "manifest.json").read_text())
    marker = tmp_path / "marker"
    size = 8  # micro params: model.input_size
    from simclr.cache import entry as cache_entry
    entry = cache_entry(manifest, "train", size, False)
    labels = entry.with_name(entry.name[:-4] + ".labels.npy")
    entry.parent.mkdir(parents=True)
    import numpy as np
    for path in (entry, labels):  # .npy files whose object arrays would unpickle a Plant
        np.save(path, np.array([Plant(marker)], dtype=object), allow_pickle=True)
    import os
    proc = run_cli("extract", "--manifest", base / "manifest.json", "--model", base / "simclr.pt", "--out-dir",
                   tmp_path / "features", "--params", params, env={**os.environ, "SIMCLR_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    rebuilt = np.load(entry)  # replaced by the decoded split
    assert rebuilt.dtype == np.uint8 and rebuilt.shape[1:] == (3, size, size)
