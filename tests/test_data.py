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


def test_split_cache_is_reused_and_keyed_by_content_hash(tmp_path, monkeypatch, layout):
    import torch

    from simclr import data
    from simclr.validate import check

    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / "cache"))
    manifest = check(layout).manifest
    images, labels, classes = data.load_split(manifest, "train", 8)
    assert images.dtype == torch.uint8 and images.shape == (9, 3, 8, 8)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and classes == ["cat", "dog", "frog"]
    assert len(list((tmp_path / "cache").iterdir())) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(data, "decode", no_decoding)
    again, _, _ = data.load_split(manifest, "train", 8)
    assert torch.equal(again, images)
    # a changed dataset (new content hash) is decoded afresh into a new entry
    with pytest.raises(AssertionError, match="decoded again"):
        data.load_split(dict(manifest, content_hash="0" * 64), "train", 8)


def test_decoding_converts_modes_and_resizes(tmp_path):
    from conftest import write_image
    from simclr.data import decode

    gray = write_image(tmp_path / "g.png", 1, size=16, mode="L")
    arr = decode(gray, 8)
    assert arr.shape == (8, 8, 3) and arr.dtype.name == "uint8"
    assert (arr[..., 0] == arr[..., 1]).all()
