"""Sweeps: the sweep file is checked before any job (naming the key), every point runs in its own
folder through a real `snakemake` subprocess, and the table and plot sum the points up."""
import csv
import json
import re
import shutil

import pytest
from PIL import Image

from conftest import ROOT, copy_project, run_cli, sh
from simclr import config, sweep

MICRO_SWEEP = """\
base: params.yaml
grid:
  train.temperature: [0.2, 0.5]
  train.seed: [0, 1]
plot:
  x: train.temperature
  y: simclr.knn_top1
"""


@pytest.fixture
def params(monkeypatch):
    monkeypatch.chdir(ROOT)  # presets and sweeps/ are named from the project root, as users run them
    return config.load_params()


def write_sweep(tmp_path, text, name="s"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_two_by_two_grid_gives_four_named_points_with_their_params(tmp_path, params):
    sw = sweep.load(write_sweep(tmp_path, MICRO_SWEEP), params)
    assert list(sw.points) == ["temperature=0.2,seed=0", "temperature=0.2,seed=1",
                               "temperature=0.5,seed=0", "temperature=0.5,seed=1"]
    p = sweep.point_params(sw, "temperature=0.5,seed=1")
    assert (p["train"]["temperature"], p["train"]["seed"]) == (0.5, 1)
    assert p["train"]["epochs"] == params["train"]["epochs"]  # the rest is the workflow's config
    assert sw.plot == {"x": "train.temperature", "y": "simclr.knn_top1", "lines": None, "log_x": False}


def test_a_list_of_grids_is_their_union_and_null_names_a_folder(tmp_path, params):
    text = ("grid:\n  - {train.accumulate: [naive, exact], train.chunk_size: [8, 16]}\n"
            "  - {train.chunk_size: [null]}\n")
    sw = sweep.load(write_sweep(tmp_path, text), params)
    assert list(sw.points)[-1] == "chunk_size=null" and len(sw.points) == 5
    assert sw.keys == ["train.accumulate", "train.chunk_size"]


def test_set_gives_every_point_a_value_without_naming_it(tmp_path, params):
    sw = sweep.load(write_sweep(tmp_path, "set: {train.epochs: 3}\ngrid: {train.seed: [0, 1]}\n"), params)
    assert list(sw.points) == ["seed=0", "seed=1"]
    assert sweep.point_params(sw, "seed=1")["train"]["epochs"] == 3
    assert sweep.dvc_commands(sw) == ["dvc exp run --queue -S 'train.epochs=3' -S 'train.seed=0,1'"]
    with pytest.raises(sweep.SweepError, match=r"grid: train\.seed: also under set"):
        sweep.load(write_sweep(tmp_path, "set: {train.seed: 3}\ngrid: {train.seed: [0, 1]}\n"), params)
    with pytest.raises(sweep.SweepError, match=r"set: data\.seed: cannot be swept"):
        sweep.load(write_sweep(tmp_path, "set: {data.seed: 3}\ngrid: {train.seed: [0, 1]}\n"), params)


def test_keys_sharing_a_last_part_are_named_in_full():
    assert sweep.point_name({"train.seed": 0, "probe.seed": 1}) == "train.seed=0,probe.seed=1"
    assert sweep.point_name({"augment.crop_scale": [0.2, 1.0]}) == "crop_scale=0.2_1.0"


@pytest.mark.parametrize("grid, expected", [
    ("train.tempreature: [0.1]", r"grid: train\.tempreature: unknown key"),
    ("train: [1]", r"grid: train: unknown key"),
    ("data.seed: [0, 1]", r"grid: data\.seed: cannot be swept: the points share the workflow's prepared dataset"),
    ("runtime.threads: [1]", r"grid: runtime\.threads: cannot be swept"),
    ("train.accumulate: [naive, bogus]", r"point accumulate=bogus: train\.accumulate: expected one of"),
    ("train.chunk_size: [128]", r"point chunk_size=128: train\.chunk_size: expected at most train\.batch_size"),
    ("train.seed: 3", r"grid: train\.seed: expected a non-empty list of values, found 3"),
    ("train.seed: [0, 0]", r"point seed=0 appears twice"),
])
def test_a_bad_grid_fails_naming_the_file_and_the_key(tmp_path, params, grid, expected):
    path = write_sweep(tmp_path, f"grid:\n  {grid}\n")
    with pytest.raises(sweep.SweepError, match=re.escape(str(path)) + ".*" + expected):
        sweep.load(path, params)


def test_a_bad_plot_or_base_fails_naming_the_key(tmp_path, params):
    with pytest.raises(sweep.SweepError, match=r"plot: x: train\.epochs: expected one of the swept keys"):
        sweep.load(write_sweep(tmp_path, "grid: {train.seed: [0]}\nplot: {x: train.epochs}\n"), params)
    with pytest.raises(sweep.SweepError, match=r"plot: y: linear: expected a probe metric"):
        sweep.load(write_sweep(tmp_path, "grid: {train.seed: [0]}\nplot: {y: linear}\n"), params)
    with pytest.raises(sweep.SweepError, match=r"base: nowhere\.yaml: file not found"):
        sweep.load(write_sweep(tmp_path, "base: nowhere.yaml\ngrid: {train.seed: [0]}\n"), params)
    with pytest.raises(sweep.SweepError, match=r"repeats: unknown key; expected base, set, grid, plot"):
        sweep.load(write_sweep(tmp_path, "grid: {train.seed: [0]}\nrepeats: 3\n"), params)


def test_a_base_preset_with_other_data_asks_for_configfile(tmp_path, params):
    """The points share the workflow's dataset: a CIFAR-10 base over the digits config says how to run it."""
    base = "configs/cifar10-cpu.yaml"
    path = write_sweep(tmp_path, f"base: {base}\ngrid: {{train.seed: [0]}}\n")
    with pytest.raises(sweep.SweepError, match=r"base: configs/cifar10-cpu\.yaml sets data\.\w+ .* "
                                               r"run the sweep with `--configfile configs/cifar10-cpu\.yaml`"):
        sweep.load(path, params)
    laid = config.load_params("params.yaml", base)  # as `snakemake --configfile <base>` makes the config
    sw = sweep.load(path, laid)
    assert sweep.point_params(sw, "seed=0")["model"]["width"] == laid["model"]["width"] == 16


def fake_runs(runs, sw, metric):
    for point, values in sw.points.items():
        (runs / point / "metrics").mkdir(parents=True)
        (runs / point / "metrics" / "probe.json").write_text(json.dumps(
            {"simclr": {"knn_top1": metric(values), "linear_top1": 0.5}, "random": {"knn_top1": 0.1}}))


def test_table_and_plot_from_the_points_metrics(tmp_path, params):
    text = ("grid:\n  - {train.accumulate: [naive, exact], train.chunk_size: [8, 16], train.seed: [0, 1]}\n"
            "  - {train.chunk_size: [null], train.seed: [0, 1]}\n"
            "plot: {x: train.chunk_size, y: simclr.knn_top1, lines: train.accumulate, log_x: true}\n")
    sw = sweep.load(write_sweep(tmp_path, text, "acc"), params)
    fake_runs(tmp_path / "runs", sw, lambda v: (v.get("train.chunk_size") or 64) / 100 + v["train.seed"] / 1000)
    csv_path, png_path = sweep.write(sw, tmp_path / "runs", tmp_path / "out")
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 10 and [r["point"] for r in rows] == list(sw.points)
    assert list(rows[0]) == ["point", "train.accumulate", "train.chunk_size", "train.seed",
                             "simclr.knn_top1", "simclr.linear_top1", "random.knn_top1"]
    assert rows[-1]["train.chunk_size"] == "" and rows[-1]["train.accumulate"] == ""  # null / not swept there
    assert float(rows[1]["simclr.knn_top1"]) == pytest.approx(0.081)
    img = Image.open(png_path)
    assert img.format == "PNG" and img.size[0] > 300
    assert img.info["Title"] == "sweep acc: simclr.knn_top1 against train.chunk_size"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_table_names_the_missing_point(tmp_path, params):
    sw = sweep.load(write_sweep(tmp_path, MICRO_SWEEP), params)
    fake_runs(tmp_path / "runs", sw, lambda v: 0.5)
    shutil.rmtree(tmp_path / "runs" / "temperature=0.5,seed=0")
    with pytest.raises(sweep.UserError, match=r"temperature=0\.5,seed=0/metrics/probe\.json"):
        sweep.write(sw, tmp_path / "runs", tmp_path / "out")
    assert not (tmp_path / "out" / "sweep.csv").exists()


def test_dvc_commands_are_the_same_grid(tmp_path, params):
    text = "grid:\n  - {train.accumulate: [naive, exact], train.seed: [0, 1]}\n  - {train.chunk_size: [null]}\n"
    sw = sweep.load(write_sweep(tmp_path, text), params)
    assert sweep.dvc_commands(sw) == [
        "dvc exp run --queue -S 'train.accumulate=naive,exact' -S 'train.seed=0,1'",
        "dvc exp run --queue -S 'train.chunk_size=null'",
    ]


def test_cli_rejects_a_bad_sweep_with_one_error_line(tmp_path):
    path = write_sweep(tmp_path, "grid: {train.tempreature: [0.1]}\n")
    proc = run_cli("sweep", path, "--params", ROOT / "params.yaml")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {path}: grid: train.tempreature: unknown key; did you mean " \
                                  "train.temperature? expected section.key as in params.yaml " \
                                  "(workflow/schemas/params.schema.yaml)"


def test_the_committed_sweep_files_are_valid(params):
    """Every sweep in sweeps/ loads (GPU ones over the preset they name, as --configfile makes the config)."""
    paths = sorted((ROOT / "sweeps").glob("*.yaml"))
    assert paths
    for path in paths:
        base = config.load_preset(path).get("base", "params.yaml")
        laid = params if base == "params.yaml" else config.load_params("params.yaml", base)
        assert sweep.load(path, laid).points, path


# --- the sweep as Snakemake runs it ----------------------------------------------------------------

def plan(project, *args):
    """{rule: jobs} that `snakemake <args> --dry-run` would run (empty when nothing is to be done)."""
    out = sh(project, "snakemake", *args, "--cores", "2", "--resources", "gpu=1", "--dry-run").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("Reasons:")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if m[0] != "total"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("sweep") / "project")
    (project / "sweeps" / "micro.yaml").write_text(MICRO_SWEEP)
    # two points at a time, one core each (the pipeline's jobs otherwise take every core given)
    proc = sh(project, "snakemake", "sweep_micro", "--cores", "2", "--resources", "gpu=2", "--set-threads",
              "sweep_pretrain=1", "sweep_extract=1", "sweep_probe=1")
    return project, proc


@pytest.mark.slow
def test_sweep_runs_four_points_into_their_own_folders_and_sums_them_up(swept):
    project, _ = swept
    runs = project / "results" / "sweeps" / "micro"
    points = sorted(p.name for p in runs.iterdir())
    assert points == ["temperature=0.2,seed=0", "temperature=0.2,seed=1", "temperature=0.5,seed=0",
                      "temperature=0.5,seed=1"]
    for point in points:
        assert (runs / point / "models" / "simclr.pt").is_file() and (runs / point / "checkpoints").is_dir()
        state = json.loads((runs / point / "metrics" / "pretrain" / "metrics.json").read_text())
        assert state["step"] == 1  # its one epoch (micro params)
    rows = list(csv.DictReader((project / "sweeps" / "micro" / "sweep.csv").open()))
    assert len(rows) == 4
    assert len({(r["train.temperature"], r["train.seed"]) for r in rows}) == 4
    for r in rows:  # each row carries its own point's metrics
        probe = json.loads((runs / r["point"] / "metrics" / "probe.json").read_text())
        assert float(r["simclr.linear_top1"]) == probe["simclr"]["linear_top1"]
    assert len({r["simclr.linear_top1"] + r["simclr.knn_top1"] for r in rows}) > 1  # the points differ
    img = Image.open(project / "sweeps" / "micro" / "sweep.png")
    assert img.format == "PNG" and img.info["Title"] == "sweep micro: simclr.knn_top1 against train.temperature"
    # the main pipeline's outputs are not touched: the sweep shares only its prepared dataset and manifest
    assert (project / "results" / "data" / "manifest.json").is_file()
    assert not (project / "results" / "models").exists() and not (project / "results" / "metrics").exists()


@pytest.mark.slow
def test_rerunning_a_sweep_does_nothing_and_a_deleted_probe_reruns_only_that_probe(swept):
    project, _ = swept
    assert plan(project, "sweep_micro") == {}
    (project / "results" / "sweeps" / "micro" / "temperature=0.5,seed=1" / "metrics" / "probe.json").unlink()
    assert plan(project, "sweep_micro") == {"sweep_probe": 1, "sweep": 1, "sweep_micro": 1}
    out = sh(project, "snakemake", "sweep_micro", "--cores", "2", "--resources", "gpu=1").stderr
    assert "temperature=0.5,seed=1/metrics/probe.json" in out
    assert plan(project, "sweep_micro") == {}


@pytest.mark.slow
def test_a_changed_point_reruns_only_that_point_and_main_pipeline_plans_as_before(swept):
    project, _ = swept
    spec = project / "sweeps" / "micro.yaml"
    spec.write_text(MICRO_SWEEP.replace("[0.2, 0.5]", "[0.2, 0.7]"))
    try:
        assert plan(project, "sweep_micro") == {"sweep_pretrain": 2, "sweep_extract": 2, "sweep_probe": 2,
                                                "sweep": 1, "sweep_micro": 1}
    finally:
        spec.write_text(MICRO_SWEEP)
    assert plan(project) == {"pretrain": 1, "extract": 1, "probe": 1, "all": 1}


@pytest.mark.slow
def test_a_bad_grid_stops_snakemake_before_any_job_naming_the_key(swept):
    project, _ = swept
    (project / "sweeps" / "bad.yaml").write_text("grid: {train.accumulate: [naive, bogus]}\n")
    proc = sh(project, "snakemake", "sweep_bad", "--cores", "2", "--resources", "gpu=1", check=False)
    assert proc.returncode != 0
    assert "sweeps/bad.yaml: point accumulate=bogus: train.accumulate: expected one of" in proc.stderr + proc.stdout
    assert not (project / "results" / "sweeps" / "bad").exists()
    (project / "sweeps" / "bad.yaml").unlink()


@pytest.mark.slow
def test_slurm_dry_run_is_one_gpu_pretrain_job_per_point(swept):
    project, _ = swept
    out = sh(project, "snakemake", "sweep_micro", "--profile", "workflow/profiles/slurm", "--dry-run",
             "--forceall").stdout
    blocks = [b.split("\n\n")[0] for b in out.split("rule sweep_pretrain:")[1:]]
    assert len(blocks) == 4
    points = set()
    for block in blocks:
        resources = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", block).group(1).split(", "))
        assert resources["gpu"] == "1" and resources["slurm_partition"] == "<gpu-partition>"
        points.add(re.search(r"wildcards: sweep=micro, point=(\S+)", block).group(1))
    assert len(points) == 4
    assert out.count("rule sweep_probe:") == 4 and "rule pretrain:" not in out


@pytest.mark.slow
def test_a_committed_table_without_its_runs_plans_the_whole_sweep(swept, tmp_path):
    """As in a fresh clone: sweeps/<name>/sweep.csv and .png are committed, results/ and .snakemake/ are
    not there. Asking for the sweep plans every point again instead of answering with the old table."""
    project, _ = swept
    clone = tmp_path / "clone"
    shutil.copytree(project, clone, ignore=shutil.ignore_patterns("results", ".snakemake"))
    assert (clone / "sweeps" / "micro" / "sweep.csv").is_file()
    assert plan(clone, "sweep_micro") == {"prepare": 1, "validate": 1, "sweep_pretrain": 4, "sweep_extract": 4,
                                          "sweep_probe": 4, "sweep": 1, "sweep_micro": 1}


@pytest.mark.slow
def test_report_files_the_sweep_table_and_plot(swept, tmp_path):
    project, _ = swept
    sh(project, "snakemake", "sweep_micro", "--report", tmp_path / "report.zip")
    import zipfile

    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    assert [n for n in names if n.endswith("/sweep.csv")] and [n for n in names if n.endswith("/sweep.png")], names


@pytest.mark.slow
def test_a_point_run_again_starts_from_its_own_checkpoint(swept):
    """Checkpoints are per point and no job's output, so a point's pretrain run again (as after a kill)
    picks up its own checkpoint: here that of its finished run, so it writes the same model untrained.
    (Last in this module: it leaves that point's features older than its model.)"""
    project, _ = swept
    point = project / "results" / "sweeps" / "micro" / "temperature=0.2,seed=1"
    model = (point / "models" / "simclr.pt").read_bytes()
    target = point.relative_to(project) / "models" / "simclr.pt"
    sh(project, "snakemake", target, "--cores", "2", "--resources", "gpu=1", "--forcerun", target)
    log = (project / "results" / "logs" / "sweeps" / "micro" / point.name / "pretrain.log").read_text()
    assert re.search(rf"resuming from epoch 2, step \d+ \({re.escape(str(point.relative_to(project)))}/checkpoints/",
                     log), log
    assert (point / "models" / "simclr.pt").read_bytes() == model


@pytest.mark.parametrize("name, rev, pinned", [
    ("cifar10-accumulation", "7ba0d18", ["model.width", "model.stored_size", "train.temperature", "train.precision"]),
    ("cifar10-choices", "7ba0d18",
     ["model.width", "model.stored_size", "train.temperature", "train.precision", "train.epochs"]),
    ("cifar10-cpu-precision", "e380ee5", ["model.stored_size"]),
])
def test_cifar_sweeps_pin_the_preset_their_tables_measured(params, name, rev, pinned):
    """The CIFAR sweeps' committed tables were measured on configs/cifar10-cpu.yaml as it was at `rev`
    (their comments cite it); the preset has moved since (#35), so each pins, under set:, the keys that
    moved, to what params.yaml and the preset at `rev` gave them (a key the schema lacked then was null)."""
    import subprocess

    import yaml

    def at_rev(path):
        return yaml.safe_load(subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                                             text=True, check=True).stdout)

    old = config.merge(at_rev("params.yaml"), at_rev("configs/cifar10-cpu.yaml"))
    cpu = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-cpu.yaml")  # --configfile, as run
    sw = sweep.load(ROOT / "sweeps" / f"{name}.yaml", cpu)
    for key in pinned:
        section, leaf = key.split(".")
        assert sw.fixed[key] == old[section].get(leaf), key
        assert all(config.get(sweep.point_params(sw, p), key) == sw.fixed[key] for p in sw.points), key
