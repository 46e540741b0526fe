"""Every malformed layout: exit 1, `error: <path>: <problem>` lines, all problems at once, no manifest."""
import json
import os
import shutil

import pytest

from conftest import make_layout, run_cli, write_image

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]



def run_validate(tmp_path, root):
    """Run `simclr validate` with default params; return (proc, manifest path)."""
    params = tmp_path / "params.yaml"
    if not params.exists():
        params.write_text("{}\n")
    manifest = tmp_path / "manifest.json"
    return run_cli("validate", root, "--manifest", manifest, "--params", params), manifest


def errors(proc):
    return [l for l in proc.stderr.splitlines() if l.startswith("error: ")]


def warnings(proc):
    return [l for l in proc.stderr.splitlines() if l.startswith("warning: ")]


def assert_rejected(proc, manifest, *expected):
    """Exit 1, every expected (path, problem) pair on one error line, no manifest."""
    assert proc.returncode == 1, proc.stderr
    lines = errors(proc)
    for path, problem in expected:
        assert any(line.startswith(f"error: {path}: ") and problem in line for line in lines), (path, problem, lines)
    assert not manifest.exists()


def test_valid_layout_passes_and_writes_manifest(tmp_path, layout):
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(manifest.read_text())
    assert m["classes"] == ["cat", "dog", "frog"]
    assert m["splits"]["train"]["per_class"] == {"cat": 3, "dog": 3, "frog": 3}
    assert m["splits"]["test"]["sizes"] == {"8x8": 9} and m["splits"]["test"]["modes"] == {"RGB": 9}
    assert len(m["content_hash"]) == 64 and m["warnings"] == []


def test_seed_example_ten_classes_but_only_cat_and_dog_folders(tmp_path):
    root = tmp_path / "ds"
    (root).mkdir()
    (root / "class.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(CIFAR)))
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            write_image(root / split / c / "0.png", hash((split, c)) % 1000)
    proc, manifest = run_validate(tmp_path, root)
    missing = [c for c in CIFAR if c not in ("cat", "dog")]
    assert len(missing) == 8
    assert_rejected(proc, manifest, *[(root / split / c, f"class {c!r}") for split in ("train", "test") for c in missing])
    assert all("has no folder" in l for l in errors(proc))
    assert len(errors(proc)) == 16


@pytest.mark.parametrize("case", ["missing", "file"])
def test_root_missing_or_not_a_directory(tmp_path, case):
    root = tmp_path / "ds"
    if case == "file":
        root.write_text("x")
    proc, manifest = run_validate(tmp_path, root)
    problem = "dataset root not found" if case == "missing" else "dataset root is not a directory"
    assert_rejected(proc, manifest, (root, problem))


def test_root_unreadable(tmp_path, layout, monkeypatch):
    # CI runs as root, which reads every folder, so the permission error is simulated
    from simclr import validate as v

    real = os.listdir

    def denied(path):
        if str(path) == str(layout):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(v.os, "listdir", denied)
    report = v.check(layout)
    assert report.errors == [f"{layout}: dataset root is not readable (Permission denied)"]
    assert report.manifest is None


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_missing(tmp_path, layout, split):
    shutil.rmtree(layout / split)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (layout / split, "split folder missing"))


def test_class_txt_missing(tmp_path, layout):
    (layout / "class.txt").unlink()
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (layout / "class.txt", "class.txt not found"))


def test_class_txt_empty(tmp_path, layout):
    (layout / "class.txt").write_text("\n  \n")
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (layout / "class.txt", "empty"))


@pytest.mark.parametrize("content, problem", [
    ("cat 0\ndog\nfrog 2\n", "line 2: expected '<class_name> <index>', found 'dog'"),
    ("cat 0\ndog one\nfrog 2\n", "line 2: expected an integer index, found 'one'"),
    ("cat 0\ndog 1\ncat 2\n", "line 3: duplicate class name 'cat'"),
    ("cat 0\ndog 1\nfrog 1\n", "line 3: duplicate index 1"),
    ("cat 1\ndog 2\nfrog 3\n", "indices must be exactly 0..2, found [1, 2, 3]"),
])
def test_class_txt_malformed(tmp_path, layout, content, problem):
    (layout / "class.txt").write_text(content)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (layout / "class.txt", problem))


def test_class_txt_bom_crlf_blank_lines_and_trailing_space_tolerated(tmp_path, layout):
    (layout / "class.txt").write_bytes(b"\xef\xbb\xbfcat 0 \r\n\r\ndog 1\t\r\nfrog 2\r\n\r\n")
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(manifest.read_text())["classes"] == ["cat", "dog", "frog"]


def test_unlisted_folder(tmp_path, layout):
    write_image(layout / "train" / "horse" / "0.png", 99)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (layout / "train" / "horse", "folder is not a class listed in class.txt"))


def test_empty_class_folder(tmp_path, layout):
    for f in (layout / "test" / "dog").iterdir():
        f.unlink()
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (layout / "test" / "dog", "class folder has no images"))


def test_not_an_image_by_content(tmp_path, layout):
    bad = layout / "train" / "cat" / "fake.png"
    bad.write_text("this is text with a .png name")
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (bad, "not an image"))


def test_truncated_image(tmp_path, layout):
    good = write_image(layout / "train" / "cat" / "big.png", 5, size=64)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (good, "corrupt or truncated image"))


def test_corrupt_jpeg(tmp_path, layout):
    jpg = write_image(layout / "test" / "frog" / "x.jpg", 6, size=32, fmt="JPEG")
    data = bytearray(jpg.read_bytes())
    jpg.write_bytes(bytes(data[:200]) + b"\x00" * 50)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (jpg, "corrupt or truncated image"))


def test_zero_byte_file(tmp_path, layout):
    empty = layout / "train" / "dog" / "empty.png"
    empty.write_bytes(b"")
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (empty, "zero-byte file"))


def test_image_nested_one_level_too_deep(tmp_path, layout):
    nested = write_image(layout / "train" / "cat" / "extra" / "n.png", 7)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (nested, "nested deeper than the layout allows"))


def test_file_directly_in_split(tmp_path, layout):
    stray = write_image(layout / "test" / "stray.png", 8)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (stray, "file outside any class folder"))


def test_symlink_outside_root(tmp_path, layout):
    outside = write_image(tmp_path / "elsewhere" / "o.png", 9)
    link = layout / "train" / "frog" / "link.png"
    link.symlink_to(outside)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (link, "symlink points outside the dataset root"))


def test_dangling_symlink(tmp_path, layout):
    link = layout / "test" / "cat" / "gone.png"
    link.symlink_to(layout / "nothing-here.png")
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(proc, manifest, (link, "symlink points nowhere"))


def test_symlink_inside_root_is_fine(tmp_path, layout):
    link = layout / "test" / "cat" / "same.png"
    link.symlink_to(layout / "train" / "cat" / "000.png")
    proc, _ = run_validate(tmp_path, layout)
    assert proc.returncode == 0, proc.stderr  # a leakage warning, not an error
    assert any("both train and test" in w for w in warnings(proc))


def test_all_problems_reported_in_one_run(tmp_path, layout):
    (layout / "class.txt").write_text("cat 0\ndog 1\nfrog 2\nbird 3\n")
    (layout / "train" / "cat" / "z.png").write_bytes(b"")
    (layout / "test" / "dog" / "t.png").write_text("text")
    write_image(layout / "train" / "horse" / "h.png", 11)
    proc, manifest = run_validate(tmp_path, layout)
    assert_rejected(
        proc, manifest,
        (layout / "train" / "bird", "has no folder"), (layout / "test" / "bird", "has no folder"),
        (layout / "train" / "cat" / "z.png", "zero-byte"), (layout / "test" / "dog" / "t.png", "not an image"),
        (layout / "train" / "horse", "not a class listed"),
    )
    assert len(errors(proc)) == 5


def test_failure_leaves_an_earlier_manifest_untouched(tmp_path, layout):
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0
    before = manifest.read_bytes()
    (layout / "train" / "cat" / "000.png").write_bytes(b"")
    proc, _ = run_validate(tmp_path, layout)
    assert proc.returncode == 1
    assert manifest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".manifest")] == []


# ---- warnings: exit 0, recorded in the manifest ----

def test_litter_is_ignored_with_a_warning(tmp_path, layout):
    (layout / "train" / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (layout / "train" / "Thumbs.db").write_bytes(b"\x00")
    (layout / "test" / "dog" / "._000.png").write_bytes(b"\x00")
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(manifest.read_text())
    assert m["splits"]["train"]["per_class"]["cat"] == 3
    assert any("3 hidden or OS litter file(s) ignored" in w for w in m["warnings"])


def test_odd_sizes_and_modes_warn(tmp_path, layout):
    write_image(layout / "train" / "cat" / "big.png", 21, size=16)
    write_image(layout / "train" / "dog" / "gray.png", 22, mode="L")
    write_image(layout / "test" / "frog" / "pal.png", 23, mode="P")
    write_image(layout / "test" / "cat" / "alpha.png", 24, mode="RGBA")
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0, proc.stderr
    ws = json.loads(manifest.read_text())["warnings"]
    assert any("1 image(s) not 8x8 like the majority" in w and "big.png" in w for w in ws)
    assert any("non-RGB" in w and "1 L" in w and "gray.png" in w for w in ws)
    assert any("non-RGB" in w and "1 P" in w and "1 RGBA" in w for w in ws)
    assert warnings(proc)


def test_train_test_leakage_warns_with_count_and_examples(tmp_path, layout):
    shutil.copy(layout / "train" / "cat" / "000.png", layout / "test" / "cat" / "copy.png")
    shutil.copy(layout / "train" / "dog" / "001.png", layout / "test" / "frog" / "copy2.png")
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0
    ws = json.loads(manifest.read_text())["warnings"]
    leak = [w for w in ws if "appear in both train and test" in w]
    assert len(leak) == 1 and leak[0].split(": ", 1)[1].startswith("2 image(s)")
    assert "copy.png" in leak[0] and "copy2.png" in leak[0]


def test_duplicates_within_split_warn(tmp_path, layout):
    shutil.copy(layout / "train" / "cat" / "000.png", layout / "train" / "dog" / "dup.png")
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0
    assert any("1 exact duplicate image(s) within the split" in w and "dup.png" in w
               for w in json.loads(manifest.read_text())["warnings"])


def test_unbalanced_classes_warn(tmp_path):
    root = make_layout(tmp_path / "ds", per_class=1)
    for k in range(12):
        write_image(root / "train" / "cat" / f"x{k}.png", 100 + k)
    proc, manifest = run_validate(tmp_path, root)
    assert proc.returncode == 0
    assert any("unbalanced classes: 'cat' has 13 images" in w for w in json.loads(manifest.read_text())["warnings"])


# ---- manifest determinism and content hash ----

def test_manifest_is_byte_identical_and_ignores_file_times(tmp_path, layout):
    proc, manifest = run_validate(tmp_path, layout)
    assert proc.returncode == 0, proc.stderr
    first = manifest.read_bytes()
    manifest.unlink()
    for p in (layout / "train" / "cat").iterdir():
        os.utime(p, (1, 1))
    again, _ = run_validate(tmp_path, layout)
    assert again.returncode == 0, again.stderr
    assert manifest.read_bytes() == first


def test_content_hash_changes_with_any_image_or_class_txt(tmp_path, layout):
    def digest():
        proc, manifest = run_validate(tmp_path, layout)
        assert proc.returncode == 0, proc.stderr
        return json.loads(manifest.read_text())["content_hash"]

    h0 = digest()
    write_image(layout / "test" / "frog" / "001.png", 555)
    h1 = digest()
    (layout / "class.txt").write_text("cat 0\ndog 1\nfrog 2\n\n")
    h2 = digest()
    (layout / "train" / "dog" / "000.png").rename(layout / "train" / "dog" / "renamed.png")  # same bytes, new name
    h3 = digest()
    assert len({h0, h1, h2, h3}) == 4


def test_parallel_decoding_gives_the_same_manifest(tmp_path):
    from simclr import validate as v

    root = make_layout(tmp_path / "ds", per_class=4)
    one = v.check(root, workers=1).manifest
    old = v.POOL_MIN_FILES
    v.POOL_MIN_FILES = 1
    try:
        two = v.check(root, workers=2).manifest
    finally:
        v.POOL_MIN_FILES = old
    assert one == two


def test_a_tree_without_class_txt_is_told_the_command_that_writes_it(tmp_path, capsys):
    """ImageFolder-style data (train/<class>/, test/<class>/, no class.txt): validate names
    `simclr classes`, which writes class.txt from the sorted folder names; then validate passes."""
    from simclr import cli

    root = make_layout(tmp_path / "ds", classes=("zebra", "ant", "moth"))
    (root / "class.txt").unlink()
    assert cli.main(["validate", str(root), "--manifest", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert f"error: {root / 'class.txt'}: class.txt not found" in err and f"`simclr classes {root}` writes it" in err
    assert cli.main(["classes", str(root)]) == 0
    assert (root / "class.txt").read_text() == "ant 0\nmoth 1\nzebra 2\n"
    assert cli.main(["validate", str(root), "--manifest", str(tmp_path / "m.json")]) == 0
    assert cli.main(["classes", str(root)]) == 1  # never replaces an existing class.txt
    assert "class.txt: already exists" in capsys.readouterr().err
    assert (root / "class.txt").read_text() == "ant 0\nmoth 1\nzebra 2\n"


def test_classes_refuses_splits_with_different_class_folders(tmp_path, capsys):
    from simclr import cli

    root = make_layout(tmp_path / "ds")
    (root / "class.txt").unlink()
    (root / "test" / "frog").rename(root / "test" / "toad")
    assert cli.main(["classes", str(root)]) == 1
    assert capsys.readouterr().err.strip() == (f"error: {root}: expected the same class folders in train/ and test/, "
                                               "found only in train/: frog; only in test/: toad")
    assert not (root / "class.txt").exists()
