"""STL-10's binary archive, imported as the layout with its unlabelled split (archives written here in
exactly the real format: stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin, class_names.txt)."""
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from simclr.data import LayoutError
from simclr.stl10 import write_layout
from simclr.validate import check

NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def column_major(images: np.ndarray) -> bytes:
    """N x 96 x 96 x 3 uint8 -> the archive's bytes: each image 3 x 96 x 96 with x before y."""
    return np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes()


def stl10_tarball(path, n_train=10, n_test=10, n_unlabelled=6, seed=0, edit=None):
    """A small stl10_binary.tar.gz; `edit(members)` may change the members' bytes before writing."""
    rng = np.random.default_rng(seed)
    arrays = {split: rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
              for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabelled))}
    members = {
        "class_names.txt": "".join(f"{n}\n" for n in NAMES).encode(),
        "train_X.bin": column_major(arrays["train"]),
        "train_y.bin": bytes((np.arange(n_train) % 10 + 1).astype(np.uint8)),
        "test_X.bin": column_major(arrays["test"]),
        "test_y.bin": bytes((np.arange(n_test)[::-1] % 10 + 1).astype(np.uint8)),
        "unlabeled_X.bin": column_major(arrays["unlabeled"]),
    }
    if edit:
        edit(members)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"stl10_binary/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, arrays


def test_the_archive_becomes_the_layout_with_its_unlabelled_split(tmp_path):
    archive, arrays = stl10_tarball(tmp_path / "stl10_binary.tar.gz")
    out = tmp_path / "stl10"
    out.mkdir()
    assert write_layout(archive, out) == NAMES
    assert (out / "class.txt").read_text().splitlines()[:2] == ["airplane 0", "bird 1"]
    # column-major bytes come back as the row-major picture: train image 3 has label 4 (cat)
    png = np.asarray(Image.open(out / "train" / "cat" / "000003.png"))
    assert np.array_equal(png, arrays["train"][3])
    assert np.array_equal(np.asarray(Image.open(out / "test" / "truck" / "000000.png")), arrays["test"][0])
    assert np.array_equal(np.asarray(Image.open(out / "unlabelled" / "000005.png")), arrays["unlabeled"][5])
    m = check(out).manifest
    assert (m["splits"]["train"]["images"], m["splits"]["test"]["images"], m["splits"]["unlabelled"]["images"]) == (10, 10, 6)
    assert m["splits"]["unlabelled"]["sizes"] == {"96x96": 6} and "per_class" not in m["splits"]["unlabelled"]


def test_prepare_stage_writes_stl10_with_limit_per_class(tmp_path):
    from test_prepare import write_params

    archive, _ = stl10_tarball(tmp_path / "stl10_binary.tar.gz", n_train=20, n_test=10, n_unlabelled=30)
    params = write_params(tmp_path, **{"data.source": "stl10", "data.stl10_archive": str(archive),
                                       "data.limit_per_class": 1})
    run_cli("prepare", "--params", params, "--out", tmp_path / "stl10", check=True)
    m = check(tmp_path / "stl10").manifest
    assert m["splits"]["train"]["images"] == 10 and m["splits"]["unlabelled"]["images"] == 10


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update({"train_X.bin": m["train_X.bin"][:-100]}),
     r"train_X.bin: expected a multiple of 27648 bytes \(3 x 96 x 96 images\), found 276380"),
    (lambda m: m.update({"train_y.bin": m["train_y.bin"][:-1]}),
     r"train_y.bin: expected 10 labels \(one per image of train_X.bin\), found 9"),
    (lambda m: m.update({"test_y.bin": bytes([11] * 10)}), r"test_y.bin: expected labels 1..10 .* found 11..11"),
    (lambda m: m.pop("unlabeled_X.bin"), r"missing unlabeled_X.bin"),
])
def test_a_damaged_archive_is_one_error_naming_the_member(tmp_path, edit, message):
    archive, _ = stl10_tarball(tmp_path / "stl10_binary.tar.gz", edit=edit)
    with pytest.raises(LayoutError, match=message):
        write_layout(archive, tmp_path)


def test_a_truncated_download_is_one_error_and_no_output(tmp_path):
    from test_prepare import write_params

    archive, _ = stl10_tarball(tmp_path / "full.tar.gz")
    cut = tmp_path / "stl10_binary.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    params = write_params(tmp_path, **{"data.source": "stl10", "data.stl10_archive": str(cut)})
    proc = run_cli("prepare", "--params", params, "--out", tmp_path / "stl10")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {cut}: not a readable stl10_binary.tar.gz"), lines
    assert not (tmp_path / "stl10").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
