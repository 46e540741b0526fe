"""pretrain survives interruption: atomic checkpoints, exact resume, fresh start on changed params, NaN guard."""
import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import BIN, assert_same_weights, prepare_micro, wait_for

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs

EPOCHS = 2  # x 10 steps of 8 images: a second epoch to kill in after the first checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A prepared, validated micro dataset (80 train images) and its params."""
    return prepare_micro(tmp_path_factory.mktemp("resume"), **{
        "data.limit_per_class": 8, "train.batch_size": 8, "train.epochs": EPOCHS, "runtime.checkpoint_every": 1})


def command(work, params, manifest, python=None):
    head = [str(BIN / "simclr")] if python is None else [sys.executable, "-c", python]
    return [*head, "pretrain", "--params", str(params), "--manifest", str(manifest),
            "--model", str(work / "model.pt"), "--live-dir", str(work / "live"), "--checkpoint-dir", str(work / "ckpt")]


def pretrain(work, params, manifest):
    work.mkdir(exist_ok=True)
    return subprocess.run(command(work, params, manifest), capture_output=True, text=True, timeout=300)


def start_and_signal(work, params, manifest, signum, delay=None):
    """Start pretrain, wait until it has written its first checkpoint (end of epoch 1), then `delay`
    seconds later (random within 0.3 s by default) send signum."""
    work.mkdir(exist_ok=True)
    proc = subprocess.Popen(command(work, params, manifest), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(work / "ckpt" / "last.pt", proc, timeout=120)
    time.sleep(random.uniform(0.0, 0.3) if delay is None else delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def curve(work, name):
    return (work / "live" / "plots" / "metrics" / f"{name}.tsv").read_text()


def weights(path):
    return torch.load(path, weights_only=False)["model"]


def run_state(path):
    return torch.load(path, weights_only=False)["run"]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    base, params = dataset
    work = tmp_path_factory.mktemp("reference")
    proc = pretrain(work, params, base / "manifest.json")
    assert proc.returncode == 0, proc.stderr
    return work


@pytest.fixture(scope="module")
def killed(dataset, tmp_path_factory):
    """A run SIGKILLed at a random moment after its first checkpoint (a folder to copy, never to use)."""
    base, params = dataset
    for attempt in range(4):  # a run that ended its last epoch within the delay was not interrupted: again, sooner
        work = tmp_path_factory.mktemp("killed")
        delay = random.uniform(0.0, 0.3) / 4 ** attempt
        code, _, _ = start_and_signal(work, params, base / "manifest.json", signal.SIGKILL, delay=delay)
        assert code == -signal.SIGKILL
        if not (work / "model.pt").exists():
            return work
    raise AssertionError("pretrain finished within the kill delay four times: the test's run is too short")


@pytest.fixture(scope="module")
def mid_epoch(dataset, tmp_path_factory):
    """A run stopped by SIGTERM right after the epoch-1 checkpoint: the next step boundary is inside
    epoch 2, where it writes a checkpoint and exits 143 (a folder to copy, never to use)."""
    base, params = dataset
    work = tmp_path_factory.mktemp("mid_epoch")
    code, out, err = start_and_signal(work, params, base / "manifest.json", signal.SIGTERM, delay=0.0)
    assert code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and "run the same command again to resume" in err
    return work


def copy_of(work, tmp_path):
    shutil.copytree(work, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_model_file_bytes_depend_only_on_its_content(tmp_path):
    """The same object saved twice (each time through another temporary name) gives the same bytes,
    so a rerun that trains the same model gives DVC the same hash."""
    from simclr import io

    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "seed": 0}
    io.save_torch(tmp_path / "a.pt", obj)
    io.save_torch(tmp_path / "b" / "simclr.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "simclr.pt").read_bytes()


def test_sigkill_then_rerun_resumes_to_the_uninterrupted_model(dataset, reference, killed, tmp_path):
    base, params = dataset
    copy_of(killed, tmp_path)
    assert not (tmp_path / "model.pt").exists()
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]  # nothing torn left visible
    proc = pretrain(tmp_path, params, base / "manifest.json")
    assert proc.returncode == 0, proc.stderr
    assert "resuming from epoch" in proc.stdout
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))
    # the DVCLive history of the resumed run is the uninterrupted run's, one row per epoch
    for name in ("loss", "knn_top1"):
        history = curve(tmp_path, name)
        assert history == curve(reference, name) and history.count("\n") == EPOCHS + 1


def test_sigterm_mid_epoch_checkpoints_at_a_step_boundary_and_resumes_there(dataset, reference, mid_epoch, tmp_path):
    base, params = dataset
    copy_of(mid_epoch, tmp_path)
    state = run_state(tmp_path / "ckpt" / "last.pt")
    assert state["epoch"] == 1 and 0 < state["batch"] < 10, state  # in the middle of epoch 2 (0-based 1)
    assert not (tmp_path / "model.pt").exists()
    proc = pretrain(tmp_path, params, base / "manifest.json")
    assert proc.returncode == 0 and f"resuming from epoch 2, step {state['step']}" in proc.stdout
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))
    assert curve(tmp_path, "loss") == curve(reference, "loss")  # the split epoch's mean loss too


def test_sigkill_after_resuming_from_a_mid_epoch_checkpoint(dataset, reference, mid_epoch, tmp_path):
    base, params = dataset
    copy_of(mid_epoch, tmp_path)
    again = subprocess.Popen(command(tmp_path, params, base / "manifest.json"), stdout=subprocess.PIPE, text=True)
    line = ""
    while "resuming from epoch 2" not in line:  # killed once it has resumed, before it can finish
        line = again.stdout.readline()
        assert line, "the rerun ended without resuming"
    again.kill()
    again.communicate(timeout=60)
    proc = pretrain(tmp_path, params, base / "manifest.json")
    assert proc.returncode == 0 and "resuming from epoch 2" in proc.stdout
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))


KILL_DURING_SECOND_CHECKPOINT = """
import os, signal, sys, torch
from simclr import checkpoint, cli
real, saves = torch.save, []
def torn(obj, path, *args, **kwargs):
    if isinstance(obj, dict) and "fingerprint" in obj:
        saves.append(path)
        if len(saves) == 2:  # half of the second checkpoint on disk, then the process dies
            with open(path, "wb") as f:
                f.write(b"PK-partial")
            os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, path, *args, **kwargs)
checkpoint.torch.save = torn
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(dataset, reference, tmp_path):
    base, params = dataset
    tmp_path.mkdir(exist_ok=True)
    proc = subprocess.run(command(tmp_path, params, base / "manifest.json", python=KILL_DURING_SECOND_CHECKPOINT),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    torn = [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".last.pt.")]
    assert len(torn) == 1 and torn[0].read_bytes() == b"PK-partial"  # the kill really landed mid-write
    assert run_state(tmp_path / "ckpt" / "last.pt")["epoch"] == 1  # the epoch-1 checkpoint, whole
    proc = pretrain(tmp_path, params, base / "manifest.json")
    assert proc.returncode == 0 and "resuming from epoch 2, step 10" in proc.stdout, proc.stdout + proc.stderr
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))


def test_sigint_checkpoints_and_exits_130(dataset, tmp_path):
    base, params = dataset
    code, _, err = start_and_signal(tmp_path, params, base / "manifest.json", signal.SIGINT, delay=0.0)
    assert code == 130 and "stopped by SIGINT" in err
    assert run_state(tmp_path / "ckpt" / "last.pt")["batch"] > 0


def killed_then_rerun_with(dataset, killed, tmp_path, old: str, new: str) -> str:
    """The killed run, rerun with `old` replaced by `new` in params.yaml, until it has said whether it
    resumes (its first epoch line, or the resume line); returns what it printed by then."""
    base, params = dataset
    copy_of(killed, tmp_path)
    changed = tmp_path / "params.yaml"
    text = params.read_text()
    assert old in text
    changed.write_text(text.replace(old, new))
    proc = subprocess.Popen(command(tmp_path, changed, base / "manifest.json"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = ""
    while not ("resuming from epoch" in seen or "\nepoch " in seen):
        line = proc.stdout.readline()
        assert line, f"pretrain ended before deciding:\n{seen}"
        seen += line
    proc.kill()
    proc.communicate(timeout=60)
    return seen


def test_changed_training_param_starts_fresh(dataset, killed, tmp_path):
    out = killed_then_rerun_with(dataset, killed, tmp_path, "temperature: 0.5", "temperature: 0.3")
    assert "belongs to other params, data or code" in out and "starting fresh" in out
    assert "resuming" not in out and "\nepoch 1/2: loss" in out


def test_changed_runtime_key_still_resumes(dataset, killed, tmp_path):
    out = killed_then_rerun_with(dataset, killed, tmp_path, "checkpoint_every: 1", "checkpoint_every: 5")
    assert "resuming from epoch" in out


def test_torn_last_checkpoint_falls_back_to_previous_pt(dataset, reference, mid_epoch, tmp_path):
    base, params = dataset
    copy_of(mid_epoch, tmp_path)  # last.pt: mid epoch 2; previous.pt: end of epoch 1
    last, previous = tmp_path / "ckpt" / "last.pt", tmp_path / "ckpt" / "previous.pt"
    assert run_state(previous)["epoch"] == 1 and run_state(previous)["batch"] == 0
    last.write_bytes(last.read_bytes()[:1000])  # torn by something outside our control
    proc = pretrain(tmp_path, params, base / "manifest.json")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {last}: unreadable checkpoint" in proc.stdout
    assert f"resuming from epoch 2, step 10 ({previous})" in proc.stdout
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))


def test_finished_run_rerun_rewrites_its_outputs_without_training(dataset, reference, tmp_path):
    """DVC deletes a stage's outputs before rerunning it; a rerun of a finished run restores them."""
    base, params = dataset
    shutil.copytree(reference / "ckpt", tmp_path / "ckpt")  # the finished run's checkpoints, no outputs
    again = pretrain(tmp_path, params, base / "manifest.json")
    assert again.returncode == 0 and f"resuming from epoch {EPOCHS + 1}" in again.stdout
    assert curve(tmp_path, "loss") == curve(reference, "loss")
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))


def test_resume_never_ignores_checkpoints(dataset, killed, tmp_path):
    out = killed_then_rerun_with(dataset, killed, tmp_path, "resume: auto", "resume: never")
    assert "resuming" not in out and "\nepoch 1/2: loss" in out


def test_non_finite_loss_stops_with_clear_error_and_no_model(dataset, tmp_path, monkeypatch):
    from simclr import accumulate, config, pretrain as pt

    base, params = dataset
    real = accumulate.nt_xent
    calls = []

    def poisoned(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) == 13 else loss  # step 13 = epoch 2 with 10 steps/epoch

    monkeypatch.setattr(accumulate, "nt_xent", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at epoch 2, step 13; last good checkpoint kept"):
        pt.pretrain(config.given(config.load_params(params), "pretrain"), base / "manifest.json", tmp_path / "model.pt",
                    tmp_path / "live", checkpoint_dir=tmp_path / "ckpt", log=lambda m: None)
    assert not (tmp_path / "model.pt").exists()
    assert run_state(tmp_path / "ckpt" / "last.pt")["epoch"] == 1


def test_same_seed_twice_gives_identical_weights_and_probe_metrics(dataset, reference, tmp_path):
    base, params = dataset
    again = tmp_path / "again"
    proc = pretrain(again, params, base / "manifest.json")
    assert proc.returncode == 0
    assert_same_weights(weights(again / "model.pt"), weights(reference / "model.pt"))
    from simclr import cli

    metrics = []
    for work in (reference, again):  # in this process: the CLI's main, as the console script calls it
        assert cli.main(["extract", "--params", str(params), "--manifest", str(base / "manifest.json"),
                         "--model", str(work / "model.pt"), "--out-dir", str(work / "features")]) == 0
        assert cli.main(["probe", "--params", str(params), "--features-dir", str(work / "features"),
                         "--metrics", str(work / "probe.json"), "--plots-dir", str(work / "plots")]) == 0
        metrics.append((work / "probe.json").read_bytes())
    assert metrics[0] == metrics[1]
    assert json.loads(metrics[0])["simclr"]["linear_top1"] >= 0


def test_fingerprint_covers_params_data_and_training_code(tmp_path):

    from simclr import checkpoint, config

    params = config.stage_params(config.validate_params({}), "pretrain")
    manifest = {"content_hash": "a" * 64}
    base = checkpoint.fingerprint(params, manifest)
    code = tmp_path / "code"
    shutil.copytree(checkpoint.Path(checkpoint.__file__).parent, code)
    assert checkpoint.fingerprint(params, manifest, code_dir=code) == base
    for name in ("augment.py", "accumulate.py", "knn.py"):  # every file of pretrain's import closure counts
        text = (code / name).read_text()
        (code / name).write_text(text + "\n# changed\n")
        assert checkpoint.fingerprint(params, manifest, code_dir=code) != base, name
        (code / name).write_text(text)
    (code / "probe.py").write_text("# another stage's code\n")
    assert checkpoint.fingerprint(params, manifest, code_dir=code) == base
    assert checkpoint.fingerprint(params, {"content_hash": "b" * 64}) != base
    changed = config.stage_params(config.validate_params({"train": {"temperature": 0.3}}), "pretrain")
    assert checkpoint.fingerprint(changed, manifest) != base
    assert checkpoint.fingerprint(params, manifest, world=2) != base  # another number of processes is another run
