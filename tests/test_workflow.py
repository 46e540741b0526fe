"""The whole pipeline through a real `snakemake` subprocess, in a temporary copy with micro params."""
import json
import subprocess

import pytest

from conftest import BIN, copy_project, tool_env


def snakemake(cwd, *args):
    return subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--resources", "gpu=1", *args],
                          cwd=cwd, capture_output=True, text=True, env=tool_env(), timeout=600)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("snake") / "project")
    proc = snakemake(project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return project


def test_runs_end_to_end_and_writes_metrics(ran):
    metrics = json.loads((ran / "metrics" / "probe.json").read_text())
    for encoder in ("simclr", "random"):
        m = metrics[encoder]
        assert 0 <= m["linear_top1"] <= m["linear_top5"] <= 1
        assert {"knn_top1", "fewshot_1_top1", "linear_C"} <= set(m)
    assert (ran / "models" / "simclr.pt").stat().st_size > 1_000_000
    assert (ran / "features" / "simclr.npz").exists() and (ran / "features" / "random.npz").exists()
    log = (ran / "metrics" / "train_log.csv").read_text().splitlines()
    assert log[0].split(",")[:4] == ["epoch", "step", "loss", "lr"] and len(log) == 2
    for stage in ("prepare", "validate", "pretrain", "extract", "probe"):
        assert (ran / "logs" / f"{stage}.log").read_text().startswith(stage)


def test_second_run_has_nothing_to_do(ran):
    proc = snakemake(ran)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_param_change_reruns_only_downstream(ran):
    params = ran / "params.yaml"
    params.write_text(params.read_text().replace("shot_draws: 2", "shot_draws: 3"))
    proc = snakemake(ran, "--dry-run")
    out = proc.stdout
    assert proc.returncode == 0 and "rule probe:" in out
    assert "rule pretrain:" not in out and "rule extract:" not in out and "rule prepare:" not in out


def test_bad_param_is_one_line_error_before_any_job(tmp_path):
    project = copy_project(tmp_path / "project")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("temperature: 0.5", "temperature: hot"))
    proc = snakemake(project)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "config: train.temperature: 'hot' is not of type 'number'" in text
    assert not (project / "data" / "digits").exists()


def test_lint_is_clean(tmp_path):
    project = copy_project(tmp_path / "project")
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=project, capture_output=True, text=True, env=tool_env())
    assert proc.returncode == 0
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
