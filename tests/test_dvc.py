"""`dvc repro`, `dvc metrics diff`, `dvc exp run --queue -S` and `dvc queue start` in a real git repository,
as a user runs them."""
import json

import pytest

from conftest import sh

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs


def ran_stages(proc):
    return [s for s in ("prepare", "validate", "pretrain", "extract", "probe") if f"Running stage '{s}'" in proc.stdout]


@pytest.fixture(scope="module")
def repo(dvc_baseline):
    project, _, first = dvc_baseline
    assert ran_stages(first) == ["prepare", "validate", "pretrain", "extract", "probe"]
    return project


def test_repro_writes_lock_and_metrics(repo):
    lock = (repo / "dvc.lock").read_text()
    assert "probe:" in lock and "md5" in lock
    assert json.loads((repo / "metrics" / "probe.json").read_text())["simclr"]["linear_top1"] >= 0
    # data and models are in DVC's cache and ignored by git; small metrics are in git
    tracked = sh(repo, "git", "ls-files").stdout.split()
    assert "metrics/probe.json" in tracked and "data/manifest.json" in tracked
    assert not any(p.startswith(("models/", "features/", "data/digits/")) for p in tracked)


def test_second_repro_runs_nothing(repo):
    proc = sh(repo, "dvc", "repro")
    assert ran_stages(proc) == []
    assert "up to date" in proc.stdout


def test_plots_show_renders_every_plot_to_html(repo, tmp_path):
    out = tmp_path / "plots"
    sh(repo, "dvc", "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    for title in ("Pretraining loss", "Learning rate", "kNN monitor accuracy",
                  "Linear-probe confusion matrix", "Linear-probe accuracy per class"):
        assert title in html, title
    assert "embedding.png" in html and list(out.rglob("*embedding.png"))


def test_push_then_pull_in_a_fresh_clone_restores_outputs_without_recomputing(repo, tmp_path):
    remote = tmp_path / "remote"
    sh(repo, "dvc", "remote", "add", "-d", "shared", str(remote))
    sh(repo, "dvc", "push")
    sh(repo, "git", "add", ".dvc/config")
    sh(repo, "git", "commit", "-qm", "shared DVC remote")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models" / "simclr.pt").exists()
    sh(clone, "dvc", "pull")
    for path in ("models/simclr.pt", "features/simclr.npz", "features/random.npz", "data/digits/class.txt"):
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    proc = sh(clone, "dvc", "repro")
    assert ran_stages(proc) == [] and "up to date" in proc.stdout
    assert sh(clone, "dvc", "status").stdout.strip().endswith("Data and pipelines are up to date.")


def test_runtime_change_reruns_nothing_and_extract_code_change_reruns_extract_and_probe(repo):
    params = repo / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("checkpoint_every: 1", "checkpoint_every: 7").replace("threads: 0", "threads: 1"))
    assert "Data and pipelines are up to date." in sh(repo, "dvc", "status").stdout
    assert ran_stages(sh(repo, "dvc", "repro")) == []
    params.write_text(text)
    code = repo / "src" / "simclr" / "extract.py"  # in extract's import closure only
    code.write_text(code.read_text() + "\n# a comment is a change too\n")
    # extract reruns; its features come out byte-identical, so DVC (which compares checksums) keeps probe
    assert ran_stages(sh(repo, "dvc", "repro")) == ["extract"]
    sh(repo, "git", "checkout", "--", "src", "dvc.lock", "metrics")
    sh(repo, "dvc", "checkout")
    assert "Data and pipelines are up to date." in sh(repo, "dvc", "status").stdout


def test_probe_param_change_reruns_only_probe_and_metrics_diff_shows_it(repo):
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("shot_c: 0.1", "shot_c: 100.0"))
    status = sh(repo, "dvc", "status").stdout
    assert "probe:" in status and "pretrain:" not in status
    proc = sh(repo, "dvc", "repro")
    assert ran_stages(proc) == ["probe"]
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json").stdout)
    changed = diff["metrics/probe.json"]
    assert any(k.endswith("fewshot_top1") or k.endswith("fewshot_std") for k in changed), changed
    sh(repo, "git", "checkout", "--", "params.yaml")
    sh(repo, "dvc", "checkout")


TEMPERATURE_SWEEP = "grid: {train.temperature: [0.1, 0.3]}\nplot: {y: simclr.knn_top1}\n"


@pytest.fixture(scope="module")
def queued(repo, tmp_path_factory):
    """README's queue for a two-point sweep: `simclr sweep sweeps/<name>.yaml --dvc | sh` (which queues
    `dvc exp run --queue -S 'train.temperature=0.1,0.3'`), `dvc queue start -j 2`, then `dvc queue
    status` until both are done - with the user cache at $XDG_CACHE_HOME (a temporary folder) instead
    of the tests' $SIMCLR_CACHE. Returns ({temperature: experiment name}, the cache)."""
    import time

    xdg = tmp_path_factory.mktemp("xdg")
    env = {"SIMCLR_CACHE": None, "XDG_CACHE_HOME": str(xdg)}
    (repo / "sweeps" / "temperature.yaml").write_text(TEMPERATURE_SWEEP)
    commands = sh(repo, "simclr", "sweep", "sweeps/temperature.yaml", "--dvc").stdout
    assert commands == "dvc exp run --queue -S 'train.temperature=0.1,0.3'\n"
    sh(repo, "bash", "-c", commands, env=env)
    (repo / "sweeps" / "temperature.yaml").unlink()
    sh(repo, "dvc", "queue", "start", "-j", "2", env=env)
    deadline = time.time() + 400
    while True:
        status = sh(repo, "dvc", "queue", "status", env=env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.time() < deadline, status
        time.sleep(2)
    sh(repo, "dvc", "queue", "stop", env=env, check=False)
    assert status.count("Success") == 2, status
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    runs = [r for rev in shown for e in (rev.get("experiments") or []) for r in e.get("revs", [])]
    names = {r["data"]["params"]["params.yaml"]["data"]["train"]["temperature"]: r["name"] for r in runs
             if "simclr" in r["data"]["metrics"].get("metrics/probe.json", {}).get("data", {})}
    return names, xdg / "simclr"


def test_queued_experiments_both_run_and_exp_show_lists_them(queued):
    names, _ = queued
    assert {0.1, 0.3} <= set(names), names


def test_exp_show_csv_has_the_sweep_tables_columns(repo, queued, tmp_path):
    """`dvc exp show --csv` of the queued sweep: one row per point, under the same column names as the
    sweep table that `snakemake sweep_<name>` writes (swept keys, then probe metrics)."""
    import csv
    import io

    from simclr import config, sweep

    spec = tmp_path / "temperature.yaml"
    spec.write_text(TEMPERATURE_SWEEP)
    sw = sweep.load(spec, config.load_params(repo / "params.yaml"))
    metrics = json.loads((repo / "metrics" / "probe.json").read_text())
    columns = sw.keys + list(sweep._flat(metrics))  # the table's, but for its `point` (the folder name)
    shown = list(csv.DictReader(io.StringIO(sh(repo, "dvc", "exp", "show", "--csv").stdout)))
    assert set(columns) <= set(shown[0]), sorted(shown[0])
    points = {float(r["train.temperature"]): r for r in shown if r["Experiment"] in queued[0].values()}
    assert set(points) == {0.1, 0.3}
    for r in points.values():
        assert 0 <= float(r["simclr.linear_top1"]) <= 1


def test_queued_runs_share_the_user_cache_outside_their_temporary_workspaces(repo, queued):
    """Both used the user cache ($XDG_CACHE_HOME/simclr here): one set of decoded splits, and one
    checkpoint folder per run - so a killed queued run finds its checkpoint when it runs again."""
    _, cache = queued
    assert sorted(p.name.split("-", 1)[1] for p in cache.glob("*-v2.npy")) == ["test-8-v2.npy", "train-8-v2.npy"]
    assert len([d for d in (cache / "checkpoints").iterdir() if (d / "last.pt").is_file()]) == 2
    assert not list((repo / ".dvc" / "tmp").rglob("checkpoints/pretrain"))


def test_exp_apply_then_metrics_diff_compares_the_experiment_with_head(repo, queued):
    names, _ = queued
    sh(repo, "dvc", "exp", "apply", names[0.1])
    assert "temperature: 0.1" in (repo / "params.yaml").read_text()
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json").stdout)
    assert diff["metrics/probe.json"], diff  # retrained encoder: its probe numbers moved
    assert "loss" in diff["metrics/pretrain/metrics.json"], diff  # and so did its training loss
    sh(repo, "git", "checkout", "--", "params.yaml", "dvc.lock", "metrics")
    sh(repo, "dvc", "checkout")


def test_plots_diff_overlays_the_experiment_and_its_baseline(repo, queued, tmp_path):
    name = queued[0][0.3]
    data = json.loads(sh(repo, "dvc", "plots", "diff", "HEAD", name, "--json").stdout)["data"]
    for title in ("Pretraining loss", "kNN monitor accuracy", "Linear-probe accuracy per class (test split)"):
        assert [p["revisions"] for p in data[title]] == [["HEAD", name]], title  # one plot, both runs
    sh(repo, "dvc", "plots", "diff", "HEAD", name, "-o", str(tmp_path / "diff"))
    assert name in (tmp_path / "diff" / "index.html").read_text()


def test_simclr_exps_is_the_experiments_table_in_a_terminal(repo, queued):
    """`simclr exps`: one row per commit and experiment, within 120 columns, with each experiment's
    changed params and its probe numbers as `dvc exp show --json` has them."""
    names, _ = queued
    out = sh(repo, "simclr", "exps").stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["experiment", "linear", "kNN"] and all(len(line) <= 120 for line in lines)
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    runs = {r["name"]: r for rev in shown for e in (rev.get("experiments") or []) for r in e.get("revs", [])}
    for temperature, name in names.items():
        row = next(line for line in lines if line.strip().startswith(name))
        assert f"train.temperature={temperature}" in row
        linear = runs[name]["data"]["metrics"]["metrics/probe.json"]["data"]["simclr"]["linear_top1"]
        assert f"{100 * linear:.2f}" in row
