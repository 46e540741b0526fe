"""Faults that must lose nothing: a full disk while a stage writes, two pretrain processes of one run,
a dataset changed after validate with the same file count."""
import errno
import os
import pathlib
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from conftest import BIN, make_layout, micro_params_yaml, prepare_micro, run_cli
from simclr import cli, data, io
from simclr.validate import check

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def test_layout_hash_is_validates_content_hash(tmp_path):
    """The check after validate recomputes exactly the manifest's hash (so the two cannot drift)."""
    root = make_layout(tmp_path / "ds")
    manifest = check(root).manifest
    assert data.layout_hash(root, manifest["classes"]) == manifest["content_hash"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    base, params = prepare_micro(base, **{"train.epochs": 3, "runtime.checkpoint_every": 1, "train.knn_every": 0})
    return base, params


def stage(*args):
    return cli.main([str(a) for a in args])


def pretrain_args(base, params, out):
    return ["pretrain", "--manifest", base / "manifest.json", "--model", out / "simclr.pt", "--live-dir",
            out / "live", "--checkpoint-dir", out / "ckpt", "--params", params]


def fail_on_call(monkeypatch, target, name, n, where=""):
    """Make target.name raise ENOSPC on its n-th call writing under a path containing `where` (as a
    write that fills the disk would); other calls write as usual."""
    real, calls = getattr(target, name), []

    def writer(*a, **k):
        dest = a[1] if name == "save" else a[0]
        if where in (str(dest) if isinstance(dest, (str, os.PathLike)) else dest.name):
            calls.append(1)
            if len(calls) == n:
                raise ENOSPC
        return real(*a, **k)

    monkeypatch.setattr(target, name, writer)


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_run_resumes(micro, tmp_path, monkeypatch, capsys):
    base, params = micro
    fail_on_call(monkeypatch, torch, "save", 2, "ckpt")  # epoch 1's checkpoint is written, epoch 2's hits the full disk
    assert stage(*pretrain_args(base, params, tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'ckpt' / 'last.pt'}: no space left on the disk")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.pt", "lock"]  # no temp file left
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["run"]["epoch"] == 1  # intact, readable
    assert not (tmp_path / "simclr.pt").exists()
    monkeypatch.undo()  # space is back
    assert stage(*pretrain_args(base, params, tmp_path)) == 0
    assert "resuming from epoch 2" in capsys.readouterr().out
    assert (tmp_path / "simclr.pt").is_file()


@pytest.mark.slow
def test_a_full_disk_leaves_earlier_model_features_and_metrics_intact(micro, tmp_path, monkeypatch, capsys):
    base, params = micro
    assert stage(*pretrain_args(base, params, tmp_path)) == 0
    model = tmp_path / "simclr.pt"
    before = model.read_bytes()
    # the model: a run whose training is done (its checkpoints say so) writes only the model file
    fail_on_call(monkeypatch, torch, "save", 1, "simclr.pt")
    assert stage(*pretrain_args(base, params, tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {model}: no space left on the disk")
    assert model.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".simclr.pt")]
    monkeypatch.undo()
    # features: the second encoder's .npz hits the full disk
    feats = tmp_path / "features"
    assert stage("extract", "--manifest", base / "manifest.json", "--model", model, "--out-dir", feats,
                 "--params", params) == 0
    earlier = {p.name: p.read_bytes() for p in feats.iterdir()}
    fail_on_call(monkeypatch, np, "savez", 2, "features")
    capsys.readouterr()
    assert stage("extract", "--manifest", base / "manifest.json", "--model", model, "--out-dir", feats,
                 "--params", params) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the disk" in err[0] and str(feats) in err[0]
    assert {p.name: p.read_bytes() for p in feats.iterdir()} == earlier  # both files as before, no temp file
    monkeypatch.undo()
    # metrics: probe's JSON hits the full disk after the plots were written
    metrics = tmp_path / "probe.json"
    metrics.write_text("{}\n")
    fail_on_call(monkeypatch, pathlib.Path, "write_text", 1, "probe.json")
    assert stage("probe", "--features-dir", feats, "--metrics", metrics, "--plots-dir", tmp_path / "plots",
                 "--params", params) == 1
    monkeypatch.undo()
    assert "no space left on the disk" in capsys.readouterr().err and metrics.read_text() == "{}\n"
    assert model.read_bytes() == before


def test_a_write_that_fills_the_disk_names_the_file_and_the_disk(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old\n")
    with pytest.raises(io.UserError, match=r"out\.json: no space left on the disk that holds it \(/.*MiB free\)"):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise ENOSPC
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def slow_params(base):
    path = base / "slow.yaml"
    path.write_text(micro_params_yaml(**{"data.limit_per_class": None, "train.epochs": 40, "train.knn_every": 0,
                                        "runtime.checkpoint_every": 1, "train.batch_size": 32}))
    return path


@pytest.mark.slow
def test_two_pretrain_processes_of_one_run_never_write_its_checkpoints_at_once(micro, tmp_path):
    """Two real processes, the same params and checkpoint folder (two queued DVC experiments of one
    fingerprint share <cache>/checkpoints/<fingerprint>): the second is refused while the first holds
    the folder; a SIGKILL drops the lock, and the next run resumes."""
    base, _ = micro
    params = slow_params(base)
    args = [str(BIN / "simclr"), *map(str, pretrain_args(base, params, tmp_path))]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = tmp_path / "ckpt" / "lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().startswith("pid ")):
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.1)
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert second.stderr.strip() == (f"error: {tmp_path / 'ckpt'}: another simclr pretrain of the same run (pid "
                                     f"{first.pid} on {os.uname().nodename}) is writing these checkpoints; wait for it "
                                     "to finish (it writes the same model), or give this one another --checkpoint-dir")
    while not (tmp_path / "ckpt" / "last.pt").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # no cleanup runs: the OS drops the lock
    first.wait()
    third = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "resuming from epoch" in third.stdout


@pytest.mark.slow
def test_an_image_replaced_after_validate_with_the_same_count_is_caught(tmp_path):
    base, params = prepare_micro(tmp_path / "p")
    image = sorted((base / "digits" / "train" / "zero").iterdir())[0]
    other = sorted((base / "digits" / "train" / "one").iterdir())[0]
    image.write_bytes(other.read_bytes())  # another valid image: validate would pass, the count is the same
    env = {**os.environ, "SIMCLR_CACHE": str(tmp_path / "cache")}  # nothing decoded yet
    proc = run_cli(*pretrain_args(base, params, tmp_path / "out"), env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"error: {base / 'digits' / 'train'}: its files changed since validate")
    assert not (tmp_path / "out" / "simclr.pt").exists()


def test_an_atomic_write_has_the_permissions_a_plain_write_gets(tmp_path):
    """mkstemp makes a private file; the renamed output is readable as any file the user writes."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    io.write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
