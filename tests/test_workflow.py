"""The whole pipeline through a real `snakemake` subprocess, in a temporary copy with micro params."""
import base64
import json
import subprocess

import pytest

from conftest import BIN, copy_project, tool_env

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs


def snakemake(cwd, *args):
    return subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--resources", "gpu=1", *args],
                          cwd=cwd, capture_output=True, text=True, env=tool_env(), timeout=600)


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=tool_env(), check=True).stdout


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A committed git + DVC checkout (where DVCLive could save an experiment) run by Snakemake."""
    project = copy_project(tmp_path_factory.mktemp("snake") / "project")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline")
    proc = snakemake(project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return project


def test_dvclive_under_snakemake_saves_no_experiment_and_leaves_dvc_yaml_alone(ran):
    committed = subprocess.run(["git", "show", "HEAD:dvc.yaml"], cwd=ran, capture_output=True, check=True).stdout
    assert (ran / "dvc.yaml").read_bytes() == committed
    assert git(ran, "for-each-ref", "refs/exps") == ""  # `dvc exp save` would have written a ref here
    assert not list(ran.glob("metrics/pretrain/**/dvc.yaml"))
    assert json.loads((ran / "metrics" / "pretrain" / "metrics.json").read_text())["step"] == 1


def test_embedding_png_has_one_colour_per_class(ran):
    from PIL import Image

    with Image.open(ran / "metrics" / "plots" / "embedding.png") as img:
        img.verify()
    with Image.open(ran / "metrics" / "plots" / "embedding.png") as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100
        legend = json.loads(img.info["Description"])["legend"]
    classes = [line.split()[0] for line in (ran / "data" / "digits" / "class.txt").read_text().splitlines()]
    assert list(legend) == classes
    assert len(set(legend.values())) == len(classes)


def test_report_holds_the_metrics_with_captions(ran):
    proc = subprocess.run([str(BIN / "snakemake"), "--report", "report.html"], cwd=ran, capture_output=True,
                          text=True, env=tool_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (ran / "report.html").read_text()
    start = html.index("var results = {") + len("var results = ")
    results = json.JSONDecoder().raw_decode(html[start:])[0]  # the report's table of embedded files
    probe = results["metrics/probe.json"]
    assert "label-scarce probe with\n1 labelled images per class" in probe["caption"]  # filled from the config
    embedded = json.loads(base64.b64decode(probe["data_uri"].split("base64,", 1)[1]))
    assert embedded == json.loads((ran / "metrics" / "probe.json").read_text())
    assert {"metrics/plots/embedding.png", "metrics/pretrain/metrics.json",
            "metrics/pretrain/plots/metrics/knn_top1.tsv", "metrics/pretrain/plots/metrics/loss.tsv"} <= set(results)


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
