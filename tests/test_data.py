from pathlib import Path

import pytest

from simclr.data import LayoutError, parse_class_txt, read_classes


def parse(tmp_path, content: bytes):
    p = tmp_path / "class.txt"
    p.write_bytes(content)
    return parse_class_txt(p)


def test_parses_names_in_index_order(tmp_path):
    (tmp_path / "class.txt").write_text("dog 1\ncat 0\nfrog 2\n")
    assert read_classes(tmp_path) == ["cat", "dog", "frog"]


def test_tolerates_bom_crlf_blank_lines_and_trailing_space(tmp_path):
    lines, problems = parse(tmp_path, b"\xef\xbb\xbfcat 0  \r\n\r\n   \r\ndog 1\t\r\n")
    assert problems == []
    assert [(cl.name, cl.index) for cl in lines] == [("cat", 0), ("dog", 1)]


@pytest.mark.parametrize("content, expected", [
    (b"cat\n", "line 1: expected '<class_name> <index>', found 'cat'"),
    (b"cat 0 extra\n", "line 1: expected '<class_name> <index>'"),
    (b"cat zero\n", "line 1: expected an integer index, found 'zero'"),
    (b"cat 0\ncat 1\n", "line 2: duplicate class name 'cat'"),
    (b"cat 0\ndog 0\n", "line 2: duplicate index 0"),
    (b"cat 0\ndog 2\n", "indices must be exactly 0..1, found [0, 2]"),
    (b"cat 1\ndog 2\n", "indices must be exactly 0..1"),
    (b"\n\n", "empty"),
])
def test_malformed_lines_are_reported(tmp_path, content, expected):
    _, problems = parse(tmp_path, content)
    assert any(expected in p for p in problems), problems


def test_read_classes_names_the_file(tmp_path):
    (tmp_path / "class.txt").write_text("cat 0\ncat 1\n")
    with pytest.raises(LayoutError, match=r"class.txt: line 2: duplicate class name 'cat'"):
        read_classes(tmp_path)


def test_split_cache_is_mapped_reused_and_keyed_by_content_hash(tmp_path, monkeypatch, layout):
    import numpy as np
    import torch

    from simclr import cache
    from simclr.validate import check

    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / "cache"))
    manifest = check(layout).manifest
    images, labels, classes = cache.load_split(manifest, "train", 8)
    assert images.dtype == torch.uint8 and images.shape == (9, 3, 8, 8)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and classes == ["cat", "dog", "frog"]
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock"))
    key = manifest["splits"]["train"]["content_hash"][:32]
    assert entries == [f"{key}-train-8-v2.labels.npy", f"{key}-train-8-v2.npy"]
    # the pixels are those of a plain decode, and a hit maps the file instead of loading it
    from simclr.data import decode, list_split
    files, _ = list_split(layout, "train", classes)
    assert np.array_equal(images.numpy(), np.stack([decode(f, 8) for f in files]).transpose(0, 3, 1, 2))

    def no_decoding(*args):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(cache, "_decode_all", no_decoding)
    again, _, _ = cache.load_split(manifest, "train", 8)
    assert torch.equal(again, images)
    maps = Path("/proc/self/maps").read_text()
    assert str(tmp_path / "cache" / f"{key}-train-8-v2.npy") in maps  # file-backed: mapped, not loaded
    # a changed dataset (new split hash) is decoded afresh into a new entry
    changed = {**manifest, "splits": {**manifest["splits"], "train": {**manifest["splits"]["train"],
                                                                      "content_hash": "0" * 64}}}
    with pytest.raises(AssertionError, match="decoded again"):
        cache.load_split(changed, "train", 8)


def test_decoding_converts_modes_and_resizes(tmp_path):
    from conftest import write_image
    from simclr.data import decode

    gray = write_image(tmp_path / "g.png", 1, size=16, mode="L")
    arr = decode(gray, 8)
    assert arr.shape == (8, 8, 3) and arr.dtype.name == "uint8"
    assert (arr[..., 0] == arr[..., 1]).all()
