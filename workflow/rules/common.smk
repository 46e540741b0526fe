# Validate the config once, before any job runs; name every path once; hand each stage exactly the
# keys it tracks (params trigger) and the runtime section (a resource: how a job runs, not a trigger).
import hashlib
import json
import os
import re

import yaml

from simclr import config as simclr_config
from simclr import deps as simclr_deps
from simclr import prepare as simclr_prepare
from simclr import sweep as simclr_sweep

try:
    # --config values arrive as text (train='{epochs: 2}'): typed by the schema, then defaults filled
    # in and validated, one line per problem naming the key
    config.update(simclr_config.validate_params(simclr_config.typed(config), "config"))
except simclr_config.ParamsError as exc:
    raise WorkflowError(f"invalid config:\n{exc}") from None
# a preset whose dataset folder is not there yet (configs/cifar10-cpu.yaml in a fresh clone) stops here,
# while the DAG is built, instead of failing a prepare job
if config["data"]["source"] == "folder" and simclr_prepare.missing_folder(config["data"]["folder"]):
    raise WorkflowError(simclr_prepare.missing_folder(config["data"]["folder"]))


# Snakemake writes under results/ only. The top-level data/manifest.json, models/, features/ and
# metrics/ belong to DVC (dvc.yaml; the metrics are committed as the baseline that `dvc metrics diff`
# compares against). Snakemake declares none of them, so it never reports a file that it did not make
# (a committed baseline, a dvc repro output, a git checkout) as up to date for the params at hand.
RESULTS = "results"
DATASET = f"{RESULTS}/data/{config['data']['source']}"
MANIFEST = f"{RESULTS}/data/manifest.json"
MODEL = f"{RESULTS}/models/simclr.pt"
LIVE = f"{RESULTS}/metrics/pretrain"
CHECKPOINTS = f"{RESULTS}/checkpoints/pretrain"  # resumable; not an output, so no job deletes it
FEATURES = f"{RESULTS}/features"
PROBE = f"{RESULTS}/metrics/probe.json"
PLOTS = f"{RESULTS}/metrics/plots"
LOGS = f"{RESULTS}/logs"


def all_cores():
    """--cores (torch then uses them all); 1 where none is given (--report; cluster profiles set threads)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


CORES = all_cores()
RUNTIME = json.dumps(config["runtime"], sort_keys=True, separators=(",", ":"))


def stage_config(stage):
    """The keys `stage` tracks, as JSON for `simclr <stage> --config` (and Snakemake's params trigger)."""
    return json.dumps(simclr_config.stage_params(config, stage), sort_keys=True)


def code(stage):
    """The package files `simclr <stage>` imports or reads (simclr.deps): a change to one reruns the stage."""
    return simclr_deps.code_deps(stage)


def source_files():
    """Files prepare reads besides params: a local CIFAR-10 archive (data.cifar10_archive)."""
    data = config["data"]
    archive = {"cifar10": data["cifar10_archive"], "stl10": data["stl10_archive"]}.get(data["source"])
    return [archive] if archive else []


def folder_listing():
    """data.source folder: a digest of every file's path, size and modification time under data.folder.
    As a param of prepare, any change inside the user's layout reruns prepare and validate (the
    folder's own time does not change when a file deep inside it does). Empty for the other sources."""
    data = config["data"]
    if data["source"] != "folder" or not os.path.isdir(data["folder"]):
        return ""
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(data["folder"]):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(top, name))
            digest.update(f"{os.path.relpath(os.path.join(top, name), data['folder'])}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def dvc_outputs():
    """Every path dvc.yaml writes, for the current data.source."""
    text = (Path(workflow.basedir) / "dvc.yaml").read_text().replace("${data.source}", config["data"]["source"])
    out = []
    for stage in yaml.safe_load(text)["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            out += [e if isinstance(e, str) else next(iter(e)) for e in stage.get(kind, [])]
    return out


def refuse_dvc_output(wildcards):
    path = wildcards.dvc_path
    raise WorkflowError(
        f"{path} is written by DVC (dvc repro), not by this workflow, which writes {RESULTS}/{path}: "
        f"run `snakemake {RESULTS}/{path} --cores 1 --resources gpu=1`, or `dvc repro` for {path}"
    )


# Sweeps (workflow/rules/sweep.smk): sweeps/<name>.yaml, each point in results/sweeps/<name>/<point>/.
SWEEPS = "sweeps"
SWEEP_RUNS = f"{RESULTS}/sweeps/{{sweep}}/{{point}}"
CONFIG_JSON = json.dumps(config, sort_keys=True)


def sweep_names():
    return sorted(p.stem for p in Path(SWEEPS).glob("*.yaml"))


_sweeps = {}  # name -> checked sweep
_points = {}  # (name, point) -> the point's params


def load_sweep(name):
    """The sweep file, checked against the workflow's config (once; a bad grid stops the DAG, naming the key)."""
    if name not in _sweeps:
        try:
            _sweeps[name] = simclr_sweep.load(f"{SWEEPS}/{name}.yaml", config)
        except simclr_sweep.UserError as exc:
            raise WorkflowError(f"invalid sweep:\n{exc}") from None
    return _sweeps[name]


def point_config(stage):
    """The keys `stage` tracks at one point, as JSON (the params trigger reruns only the points that change)."""

    def cfg(wildcards):
        sweep = load_sweep(wildcards.sweep)
        if wildcards.point not in sweep.points:
            raise WorkflowError(f"{SWEEPS}/{wildcards.sweep}.yaml has no point {wildcards.point}")
        key = (wildcards.sweep, wildcards.point)
        if key not in _points:
            _points[key] = simclr_sweep.point_params(sweep, wildcards.point)
        return json.dumps(simclr_config.stage_params(_points[key], stage), sort_keys=True)

    return cfg


def sweep_probes(name):
    """Every point's probe metrics (checking the sweep file first)."""
    return [f"{RESULTS}/sweeps/{name}/{point}/metrics/probe.json" for point in load_sweep(name).points]


def sweep_costs(name):
    """Every point's pretrain summary (the table's cost columns read the per-epoch series beside it)."""
    return [f"{RESULTS}/sweeps/{name}/{point}/metrics/pretrain/metrics.json" for point in load_sweep(name).points]
