"""The whole pipeline through a real `snakemake` subprocess, in a temporary copy with micro params."""
import base64
import json
import subprocess

import pytest

from conftest import BIN, copy_project, pending, tool_env

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs


def snakemake(cwd, *args):
    return subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--resources", "gpu=1", *args],
                          cwd=cwd, capture_output=True, text=True, env=tool_env(), timeout=600)


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=tool_env(), check=True).stdout


@pytest.fixture(scope="module")
def ran(snakemade):
    """A fresh clone of a committed git + DVC repository (where DVCLive could save an experiment) run by Snakemake."""
    return snakemade


def test_dvclive_under_snakemake_saves_no_experiment_and_leaves_dvc_yaml_alone(ran):
    committed = subprocess.run(["git", "show", "HEAD:dvc.yaml"], cwd=ran, capture_output=True, check=True).stdout
    assert (ran / "dvc.yaml").read_bytes() == committed
    assert git(ran, "for-each-ref", "refs/exps") == ""  # `dvc exp save` would have written a ref here
    assert not list(ran.glob("results/metrics/pretrain/**/dvc.yaml"))
    assert json.loads((ran / "results" / "metrics" / "pretrain" / "metrics.json").read_text())["step"] == 1
    # DVC's paths are left to DVC: the committed baseline untouched, no model or features written there
    assert git(ran, "status", "--porcelain", "metrics", "data") == ""
    assert not (ran / "models").exists() and not (ran / "features").exists()


def test_each_stage_ran_with_its_own_keys_on_the_micro_settings(ran):
    """Under Snakemake each stage is handed only the keys it tracks; extract builds the model from the
    model file (a 64-wide head here), pretrain saved its tracked params without runtime."""
    import torch

    from simclr import config

    saved = torch.load(ran / "results" / "models" / "simclr.pt", weights_only=False)
    params = config.load_params(ran / "params.yaml")
    assert saved["params"] == config.stage_params(params, "pretrain") and "runtime" not in saved["params"]
    assert saved["params"]["train"]["accumulate"] == "exact" and saved["params"]["train"]["chunk_size"] == 8
    assert saved["model"]["head.3.weight"].shape[0] == 64 == params["model"]["proj_dim"]
    assert "chunk 8, exact" in (ran / "results" / "logs" / "pretrain.log").read_text()
    probe = json.loads((ran / "results" / "metrics" / "probe.json").read_text())
    assert probe["simclr"] != probe["random"]  # extract loaded the trained weights


def test_embedding_png_has_one_colour_per_class(ran):
    from PIL import Image

    with Image.open(ran / "results" / "metrics" / "plots" / "embedding.png") as img:
        img.verify()
    with Image.open(ran / "results" / "metrics" / "plots" / "embedding.png") as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100
        legend = json.loads(img.info["Description"])["legend"]
    classes = [line.split()[0] for line in (ran / "results" / "data" / "digits" / "class.txt").read_text().splitlines()]
    assert list(legend) == classes
    assert len(set(legend.values())) == len(classes)


def test_report_holds_the_metrics_with_captions(ran):
    proc = subprocess.run([str(BIN / "snakemake"), "--report", "report.html"], cwd=ran, capture_output=True,
                          text=True, env=tool_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (ran / "report.html").read_text()
    start = html.index("var results = {") + len("var results = ")
    results = json.JSONDecoder().raw_decode(html[start:])[0]  # the report's table of embedded files
    probe = results["results/metrics/probe.json"]
    assert "label-scarce probe with\n1 labelled images per class" in probe["caption"]  # filled from the config
    embedded = json.loads(base64.b64decode(probe["data_uri"].split("base64,", 1)[1]))
    assert embedded == json.loads((ran / "results" / "metrics" / "probe.json").read_text())
    assert {"results/metrics/plots/embedding.png", "results/metrics/pretrain/metrics.json",
            "results/metrics/pretrain/plots/metrics/knn_top1.tsv",
            "results/metrics/pretrain/plots/metrics/loss.tsv"} <= set(results)


def test_second_run_has_nothing_to_do(ran):
    assert pending(ran) == set()
    proc = snakemake(ran)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_runtime_change_reruns_nothing_and_a_probe_param_reruns_only_probe(ran):
    params = ran / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("checkpoint_every: 1", "checkpoint_every: 4").replace("threads: 0", "threads: 1"))
    assert pending(ran) == set()
    params.write_text(text.replace("shot_draws: 2", "shot_draws: 3"))
    assert pending(ran) == {"probe"}
    params.write_text(text)



def test_config_overrides_reach_the_stages_typed_by_the_schema(ran):
    """README's override form: a section as YAML flow on Snakemake's --config. Snakemake hands its values
    over as text; the workflow types them by the schema, so 2 is the integer 2 and the list is numbers."""
    assert pending(ran, "--config", "train={epochs: 2}") == {"pretrain", "extract", "probe"}
    proc = snakemake(ran, "--dry-run", "--printshellcmds", "--config", "train={epochs: 2, temperature: 0.2}",
                     "augment={crop_scale: [0.3, 1.0]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = next(line for line in proc.stdout.splitlines() if "simclr pretrain" in line)
    tracked = json.loads(command.split("--config '", 1)[1].split("'", 1)[0])
    assert tracked["train"]["epochs"] == 2 and tracked["train"]["temperature"] == 0.2
    assert tracked["augment"]["crop_scale"] == [0.3, 1.0]
    assert tracked["train"]["batch_size"] == 16  # the rest of the section is kept
    bad = snakemake(ran, "--dry-run", "--config", "train={epochs: two}")
    assert bad.returncode != 0 and "config: train.epochs: 'two' is not of type 'integer'" in bad.stdout + bad.stderr


def test_a_preset_applied_with_configfile_changes_exactly_its_keys(ran):
    """README: `snakemake ... --configfile configs/<preset>.yaml` lays the preset over params.yaml; the
    pretrain job then gets params.yaml's values with the preset's keys replaced, as config.load_params
    merges them (the short GPU preset: no data download is needed to plan the run)."""
    from simclr import config

    preset = ran / "configs" / "cifar10-resnet18-short.yaml"
    proc = snakemake(ran, "--dry-run", "--printshellcmds", "--configfile", str(preset))
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = next(line for line in proc.stdout.splitlines() if "simclr pretrain" in line)
    tracked = json.loads(command.split("--config '", 1)[1].split("'", 1)[0])
    expected = config.stage_params(config.load_params(ran / "params.yaml", preset), "pretrain")
    assert tracked == expected
    assert tracked["optim"]["base_lr"] == 0.03 and tracked["train"]["batch_size"] == 512  # the preset's
    assert tracked["augment"]["jitter_p"] == config.load_params(ran / "params.yaml")["augment"]["jitter_p"]


def test_after_kill_9_the_readme_recovery_unlocks_then_resumes_the_incomplete_job(tmp_path):
    """README, Interrupted runs: after `kill -9` of Snakemake (or a power loss) its lock stays, so
    --rerun-incomplete alone fails; `snakemake --unlock` first, then the rerun resumes pretrain."""
    import os
    import signal

    from conftest import wait_for

    project = copy_project(tmp_path / "project", **{"train.epochs": 6, "train.knn_every": 0})
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", "--resources", "gpu=1"], cwd=project,
                                 stdout=log, stderr=subprocess.STDOUT, env=tool_env(), start_new_session=True)
        wait_for(project / "results" / "checkpoints" / "pretrain" / "last.pt", first, timeout=300)
        os.killpg(first.pid, signal.SIGKILL)  # Snakemake and its jobs, at once: no cleanup runs
        first.wait()
    assert not (project / "results" / "models" / "simclr.pt").exists()
    locked = snakemake(project, "--rerun-incomplete")
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    unlock = subprocess.run([str(BIN / "snakemake"), "--unlock"], cwd=project, capture_output=True, text=True,
                            env=tool_env(), timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = snakemake(project, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "pretrain: resuming from epoch" in (project / "results" / "logs" / "pretrain.log").read_text()
    assert (project / "results" / "metrics" / "probe.json").is_file()


def test_bad_param_is_one_line_error_before_any_job(tmp_path):
    project = copy_project(tmp_path / "project")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("temperature: 0.5", "temperature: hot"))
    proc = snakemake(project)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "config: train.temperature: 'hot' is not of type 'number'" in text
    assert not (project / "results").exists()


def test_lint_is_clean(tmp_path):
    project = copy_project(tmp_path / "project")
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=project, capture_output=True, text=True, env=tool_env())
    assert proc.returncode == 0
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_a_bare_snakemake_runs_with_the_default_profile_and_ends_with_the_headline(tmp_path):
    """profiles/default (Snakemake 8+ loads it by itself): no --cores needed (the README's command with
    --cores 1 --resources gpu=1 is unaffected: every other test here runs that one). The run ends with
    SimCLR against random-init and the paths of the metrics and the picture."""
    project = copy_project(tmp_path / "project")
    proc = subprocess.run([str(BIN / "snakemake")], cwd=project, capture_output=True, text=True, env=tool_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "Using workflow specific profile profiles/default" in text
    metrics = json.loads((project / "results" / "metrics" / "probe.json").read_text())
    linear = f"linear {100 * metrics['simclr']['linear_top1']:.1f}% vs {100 * metrics['random']['linear_top1']:.1f}%"
    assert f"SimCLR vs random-init: {linear}" in text
    assert "metrics: results/metrics/probe.json; picture: results/metrics/plots/embedding.png" in text


def test_a_preset_whose_dataset_is_missing_stops_while_the_dag_is_built(tmp_path):
    """configs/cifar10-cpu.yaml in a fresh clone: one line naming the folder and how to get it, no job."""
    project = copy_project(tmp_path / "project")
    proc = snakemake(project, "--configfile", "configs/cifar10-cpu.yaml")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert ("data.folder: data/cifar10-jpg/cifar10: expected a dataset in the class.txt/train/test layout, "
            "found nothing (docs/data.md); for the CIFAR-10 JPEG copy: mkdir -p data/cifar10-jpg") in text
    assert "rule prepare" not in text and not (project / "results").exists()
