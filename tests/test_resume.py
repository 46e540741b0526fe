"""pretrain survives interruption: atomic checkpoints, exact resume, fresh start on changed params, NaN guard."""
import json
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch

from conftest import BIN, micro_params_yaml, run_cli

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs

EPOCHS = 2  # x 10 steps of 8 images: a second epoch to kill in after the first checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A prepared, validated micro dataset (80 train images) and its params."""
    base = tmp_path_factory.mktemp("resume")
    params = base / "params.yaml"
    params.write_text(micro_params_yaml(**{"data.limit_per_class": 8, "train.batch_size": 8,
                                           "train.epochs": EPOCHS, "train.checkpoint_every": 1}))
    run_cli("prepare", "--params", params, "--out", base / "digits", check=True)
    run_cli("validate", base / "digits", "--manifest", base / "manifest.json", "--params", params, check=True)
    return base, params


def command(work, params, manifest):
    return [str(BIN / "simclr"), "pretrain", "--params", str(params), "--manifest", str(manifest),
            "--model", str(work / "model.pt"), "--live-dir", str(work / "live"),
            "--checkpoint-dir", str(work / "ckpt")]


def pretrain(work, params, manifest):
    work.mkdir(exist_ok=True)
    return subprocess.run(command(work, params, manifest), capture_output=True, text=True, timeout=300)


def start_and_signal(work, params, manifest, signum, after_checkpoints=1):
    """Start pretrain, wait until it has written a checkpoint, then a random moment later send signum."""
    work.mkdir(exist_ok=True)
    proc = subprocess.Popen(command(work, params, manifest), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (work / "ckpt" / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def curve(work, name):
    return (work / "live" / "plots" / "metrics" / f"{name}.tsv").read_text()


def weights(path):
    return torch.load(path, weights_only=False)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    base, params = dataset
    work = tmp_path_factory.mktemp("reference")
    proc = pretrain(work, params, base / "manifest.json")
    assert proc.returncode == 0, proc.stderr
    return work


def test_sigkill_then_rerun_resumes_to_the_uninterrupted_model(dataset, reference, tmp_path):
    base, params = dataset
    code, _, _ = start_and_signal(tmp_path, params, base / "manifest.json", signal.SIGKILL)
    assert code == -signal.SIGKILL
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


def test_sigterm_checkpoints_at_step_boundary_exits_nonzero_and_resumes(dataset, reference, tmp_path):
    base, params = dataset
    code, out, err = start_and_signal(tmp_path, params, base / "manifest.json", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and "run the same command again to resume" in err
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert state["batch"] > 0 or state["epoch"] > 1  # a mid-run checkpoint, not only the epoch-1 one
    assert not (tmp_path / "model.pt").exists()
    proc = pretrain(tmp_path, params, base / "manifest.json")
    assert proc.returncode == 0 and "resuming from epoch" in proc.stdout
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))


def killed_then_rerun_with(dataset, tmp_path, old: str, new: str):
    """Kill a run after its first checkpoint, then rerun it with `old` replaced by `new` in params.yaml."""
    base, params = dataset
    start_and_signal(tmp_path, params, base / "manifest.json", signal.SIGKILL)
    changed = tmp_path / "params.yaml"
    changed.write_text(params.read_text().replace(old, new))
    return pretrain(tmp_path, changed, base / "manifest.json")


def test_changed_training_param_starts_fresh(dataset, tmp_path):
    proc = killed_then_rerun_with(dataset, tmp_path, "temperature: 0.5", "temperature: 0.3")
    assert proc.returncode == 0
    assert "belongs to other params, data or code" in proc.stdout and "starting fresh" in proc.stdout
    assert "resuming" not in proc.stdout


def test_corrupt_checkpoint_falls_back_to_the_previous_one(dataset, reference, tmp_path):
    base, params = dataset
    start_and_signal(tmp_path, params, base / "manifest.json", signal.SIGKILL)
    last = tmp_path / "ckpt" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # torn by something outside our control
    proc = pretrain(tmp_path, params, base / "manifest.json")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {last}: unreadable checkpoint" in proc.stdout
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))


def test_finished_run_rerun_rewrites_its_outputs_without_training(dataset, reference, tmp_path):
    """DVC deletes a stage's outputs before rerunning it; a rerun of a finished run restores them."""
    base, params = dataset
    proc = pretrain(tmp_path, params, base / "manifest.json")
    (tmp_path / "model.pt").unlink()
    shutil.rmtree(tmp_path / "live")
    again = pretrain(tmp_path, params, base / "manifest.json")
    assert again.returncode == 0 and f"resuming from epoch {EPOCHS + 1}" in again.stdout
    assert curve(tmp_path, "loss") == curve(reference, "loss")
    assert_same_weights(weights(tmp_path / "model.pt"), weights(reference / "model.pt"))


def test_resume_never_ignores_checkpoints(dataset, tmp_path):
    proc = killed_then_rerun_with(dataset, tmp_path, "resume: auto", "resume: never")
    assert proc.returncode == 0 and "resuming" not in proc.stdout


def test_non_finite_loss_stops_with_clear_error_and_no_model(dataset, tmp_path, monkeypatch):
    from simclr import config, pretrain as pt

    base, params = dataset
    real = pt.nt_xent
    calls = []

    def poisoned(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) == 13 else loss  # step 13 = epoch 2 with 10 steps/epoch

    monkeypatch.setattr(pt, "nt_xent", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at epoch 2, step 13; last good checkpoint kept"):
        pt.pretrain(config.load_params(params), base / "manifest.json", tmp_path / "model.pt",
                    tmp_path / "live", checkpoint_dir=tmp_path / "ckpt", log=lambda m: None)
    assert not (tmp_path / "model.pt").exists()
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)["epoch"] == 1


def test_same_seed_twice_gives_identical_weights_and_probe_metrics(dataset, reference, tmp_path):
    base, params = dataset
    again = tmp_path / "again"
    proc = pretrain(again, params, base / "manifest.json")
    assert proc.returncode == 0
    assert_same_weights(weights(again / "model.pt"), weights(reference / "model.pt"))
    metrics = []
    for work in (reference, again):
        run_cli("extract", "--params", params, "--manifest", base / "manifest.json", "--model", work / "model.pt",
                "--out-dir", work / "features", check=True)
        run_cli("probe", "--params", params, "--features-dir", work / "features", "--metrics", work / "probe.json",
                "--plots-dir", work / "plots", check=True)
        metrics.append((work / "probe.json").read_bytes())
    assert metrics[0] == metrics[1]
    assert json.loads(metrics[0])["simclr"]["linear_top1"] >= 0


def test_fingerprint_covers_params_data_and_training_code(tmp_path):
    from simclr import config, pretrain as pt

    params = config.validate_params({})
    manifest = {"content_hash": "a" * 64}
    base = pt.fingerprint(params, manifest)
    code = tmp_path / "code"
    shutil.copytree(pt.Path(pt.__file__).parent, code)
    assert pt.fingerprint(params, manifest, code) == base
    (code / "augment.py").write_text((code / "augment.py").read_text() + "\n# changed\n")
    assert pt.fingerprint(params, manifest, code) != base
    assert pt.fingerprint(params, {"content_hash": "b" * 64}) != base
    changed = config.validate_params({"train": {"temperature": 0.3}})
    assert pt.fingerprint(changed, manifest) != base
    # keys that do not change the trained model keep the checkpoint valid
    same = config.validate_params({"train": {"checkpoint_every": 5, "threads": 1, "knn_every": 3, "gpus": 2}})
    assert pt.fingerprint(same, manifest) == base
    assert pt.fingerprint(params, manifest, world=2) != base  # another number of processes is another run
