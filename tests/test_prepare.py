import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import yaml

from conftest import ROOT, micro_params_yaml, run_cli
from simclr.validate import check


def cifar_tarball(path, per_batch=4, seed=0, protocol=None):
    """A tiny cifar-10-python.tar.gz in the real pickle format (5 train batches + test batch + meta)."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            data = pickle.dumps(obj, protocol=protocol)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for b in range(1, 6):
            add(f"data_batch_{b}", {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                     b"labels": [(b * per_batch + i) % 10 for i in range(per_batch)]})
        add("test_batch", {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))})
        add("batches.meta", {b"label_names": [n.encode() for n in
                             ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]]})
    return path


def write_params(tmp_path, **overrides):
    p = tmp_path / "params.yaml"
    p.write_text(micro_params_yaml(**overrides))
    return p


@pytest.mark.slow
def test_digits_source_writes_a_valid_stratified_layout(tmp_path):
    params = write_params(tmp_path, **{"data.limit_per_class": None})
    run_cli("prepare", "--params", params, "--out", tmp_path / "digits", check=True)
    report = check(tmp_path / "digits")
    assert report.errors == []
    m = report.manifest
    assert m["classes"][:2] == ["zero", "one"] and len(m["classes"]) == 10
    assert m["splits"]["train"]["images"] + m["splits"]["test"]["images"] == 1797
    assert m["splits"]["test"]["images"] == 450  # 25% held out
    assert m["splits"]["train"]["sizes"] == {"32x32": 1347}
    assert min(m["splits"]["test"]["per_class"].values()) >= 43  # stratified


@pytest.mark.slow
def test_digits_prepare_is_deterministic(tmp_path):
    params = write_params(tmp_path)
    for out in ("a", "b"):
        run_cli("prepare", "--params", params, "--out", tmp_path / out, check=True)
    assert check(tmp_path / "a").manifest["content_hash"] == check(tmp_path / "b").manifest["content_hash"]


def test_cifar10_source_reads_the_python_tarball(tmp_path):
    archive = cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    params = write_params(tmp_path, **{"data.source": "cifar10", "data.cifar10_archive": str(archive),
                                       "data.limit_per_class": None})
    run_cli("prepare", "--params", params, "--out", tmp_path / "cifar10", check=True)
    assert (tmp_path / "cifar10" / "class.txt").read_text().splitlines()[:2] == ["airplane 0", "automobile 1"]
    m = check(tmp_path / "cifar10").manifest
    assert m["splits"]["train"]["images"] == 20 and m["splits"]["test"]["images"] == 10
    # pixels survive the round trip: the first test image (label 0) is the first row of test_batch
    from PIL import Image
    with tarfile.open(archive) as tar:
        test = pickle.load(tar.extractfile("cifar-10-batches-py/test_batch"), encoding="bytes")
    png = np.asarray(Image.open(tmp_path / "cifar10" / "test" / "airplane" / "00000.png"))
    assert np.array_equal(png, test[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0))


def test_folder_source_leaves_a_pointer_not_a_copy(tmp_path, layout):
    params = write_params(tmp_path, **{"data.source": "folder", "data.folder": str(layout)})
    run_cli("prepare", "--params", params, "--out", tmp_path / "folder", check=True)
    files = list((tmp_path / "folder").iterdir())
    assert [f.name for f in files] == ["simclr-folder.json"]
    assert json.loads(files[0].read_text())["folder"] == str(layout)
    assert check(tmp_path / "folder").manifest["root"] == str(layout)


def test_missing_folder_is_one_clear_error_and_no_output(tmp_path):
    params = write_params(tmp_path, **{"data.source": "folder", "data.folder": str(tmp_path / "nowhere")})
    proc = run_cli("prepare", "--params", params, "--out", tmp_path / "folder")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: data.folder: {tmp_path / 'nowhere'}: expected a dataset in the "
                                   "class.txt/train/test layout, found nothing (docs/data.md); for the CIFAR-10 "
                                   "JPEG copy: mkdir -p data/cifar10-jpg && tar -xzf cifar10-jpg.tar.gz -C data/cifar10-jpg")
    assert not (tmp_path / "folder").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # no temp folder left behind


def test_missing_cifar_archive_is_a_clear_error(tmp_path):
    params = write_params(tmp_path, **{"data.source": "cifar10", "data.cifar10_archive": str(tmp_path / "x.tar.gz")})
    proc = run_cli("prepare", "--params", params, "--out", tmp_path / "cifar10")
    assert proc.returncode == 1 and "x.tar.gz: CIFAR-10 archive not found" in proc.stderr
    assert not (tmp_path / "cifar10").exists()


def test_unknown_source_is_one_line_naming_the_key(tmp_path):
    params = write_params(tmp_path, **{"data.source": "imagenet"})
    proc = run_cli("prepare", "--params", params, "--out", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {params}: data.source: expected one of ['digits', 'cifar10', 'stl10', 'folder'], found 'imagenet'"]
    assert not (tmp_path / "out").exists()


def test_a_python3_protocol_2_archive_is_read(tmp_path):
    """Python 3 pickles bytes under protocol 2 as _codecs.encode(str, 'latin1'): a CIFAR-10 archive
    rewritten by Python 3 (a mirror, a subset tool) carries it, and must still be read."""
    archive = cifar_tarball(tmp_path / "cifar-10-python.tar.gz", protocol=2)
    with tarfile.open(archive) as tar:
        assert b"_codecs" in tar.extractfile("cifar-10-batches-py/batches.meta").read()
    from simclr.prepare import read_cifar10_archive
    splits, names = read_cifar10_archive(archive)
    assert names[0] == "airplane" and splits["train"][0].shape == (20, 32, 32, 3)


def test_the_unpickler_builds_nothing_else_new(tmp_path):
    """Only _codecs.encode was added: its sibling decode, and any other global, are still refused."""
    import _codecs

    from simclr.prepare import CifarUnpickler

    class Other:
        def __reduce__(self):
            return (_codecs.decode, (b"x", "latin1"))
    with pytest.raises(pickle.UnpicklingError, match="refused to build _codecs.decode"):
        CifarUnpickler(io.BytesIO(pickle.dumps(Other(), protocol=2))).load()
