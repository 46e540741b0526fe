"""Shared helpers: tests build their own small datasets; nothing is downloaded."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_image(path: Path, seed: int, size: int = 8, mode: str = "RGB", fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def make_layout(root: Path, classes=("cat", "dog", "frog"), per_class: int = 3, size: int = 8) -> Path:
    """A valid dataset in the layout, distinct random images everywhere."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "class.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(classes)))
    seed = 0
    for split in ("train", "test"):
        for c in classes:
            for k in range(per_class):
                seed += 1
                write_image(root / split / c / f"{k:03d}.png", seed, size)
    return root


@pytest.fixture
def layout(tmp_path):
    return make_layout(tmp_path / "ds")


def run_cli(*args, cwd=None, env=None, check=False):
    """Run the installed `simclr` console script as a user would."""
    proc = subprocess.run([str(BIN / "simclr"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"simclr {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


# Params for runs that must finish in seconds: a few dozen digits, one epoch, 8x8 inputs; exact mode
# in two chunks, channels_last (the default) and a head narrower than 128, so that every whole run
# (CLI, Snakemake, DVC) goes through them (extract once broke on another proj_dim under Snakemake).
MICRO_PARAMS = {
    "data": {"limit_per_class": 4},
    "model": {"input_size": 8, "proj_dim": 64, "width": 8},
    "train": {"epochs": 1, "batch_size": 16, "chunk_size": 8, "accumulate": "exact", "knn_every": 1},
    "runtime": {"device": "cpu"},
    "optim": {"warmup_epochs": 0},
    "extract": {"batch_size": 64},
    "probe": {"c_num": 2, "shots": 1, "shot_draws": 2, "knn_k": 5, "max_iter": 200, "val_fraction": 0.5,
              "embedding": "pca"},
}


def micro_params_yaml(base: Path = ROOT / "params.yaml", **overrides) -> str:
    """params.yaml with MICRO_PARAMS (and overrides) merged in, keeping every key explicit."""
    import yaml

    params = yaml.safe_load(base.read_text())
    for section, values in {**MICRO_PARAMS}.items():
        params[section].update(values)
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    return yaml.safe_dump(params, sort_keys=False)


PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "profiles", "src", "configs", "sweeps", ".dvc",
                 ".dvcignore", ".gitignore"]


def copy_project(dest: Path, **overrides) -> Path:
    """A copy of the project with micro params, as a user's checkout would be."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_symlink():  # profiles -> workflow/profiles (Snakemake's default-profile location)
            os.symlink(os.readlink(src), dest / name)
        elif src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(micro_params_yaml(**overrides))
    return dest


def tool_env() -> dict:
    """Environment for snakemake/dvc subprocesses: this venv first on PATH, no DVC analytics."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    return env


def prepare_micro(base: Path, **overrides) -> tuple[Path, Path]:
    """A prepared and validated micro dataset in `base` (digits, via the CLI) and its params file."""
    base.mkdir(parents=True, exist_ok=True)
    params = base / "params.yaml"
    params.write_text(micro_params_yaml(**overrides))
    run_cli("prepare", "--params", params, "--out", base / "digits", check=True)
    run_cli("validate", base / "digits", "--manifest", base / "manifest.json", "--params", params, check=True)
    return base, params


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Block until `path` exists while `proc` still runs (fail if it ends first or time runs out)."""
    import time

    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.01)


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| over tensors, or over dicts of tensors with b's keys."""
    if isinstance(b, dict):
        num = sum(float((a[k] - b[k]).double().pow(2).sum()) for k in b)
        return (num / sum(float(b[k].double().pow(2).sum()) for k in b)) ** 0.5
    return float((a - b).double().norm() / b.double().norm())


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch_equal(a[k], b[k]), k


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


# The whole suite runs on 2 pytest-xdist workers, a module's tests on one (pyproject.toml: -n auto
# --dist loadfile; 17 min 58 s -> 13 min 17 s on a 2-core Zen 3, docs/development.md). A narrowed run
# (-m, -k: `pytest -m "not slow"`, the working loop) runs in this process: there, the workers' start-up
# and two pools of torch threads on 2 cores cost more than they save (1 min 9 s serial, 1 min 42 s on
# 2 workers). An explicit -n wins.
def pytest_xdist_auto_num_workers(config):
    narrowed = config.option.markexpr or config.option.keyword
    return 0 if narrowed or (os.cpu_count() or 1) < 2 else 2


@pytest.fixture(scope="session", autouse=True)
def _cache_outside_the_checkout(tmp_path_factory):
    """The decoded-split cache of every test and subprocess in a temporary folder, never .cache/ here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIMCLR_CACHE", str(tmp_path_factory.getbasetemp() / "simclr-cache"))
        yield


@pytest.fixture(autouse=True)
def _restore_torch_switches():
    """torch's global determinism switch and cuDNN choice restored after each test (pretrain sets them)."""
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = benchmark


def sh(cwd, *cmd, check=True, timeout=600, env=None):
    """Run git, dvc or snakemake (this venv's) as a user types it; fail with its output when check.
    env: variables to set (None as a value removes one)."""
    exe = str(BIN / cmd[0]) if cmd[0] in ("dvc", "snakemake") else cmd[0]
    full = tool_env()
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    proc = subprocess.run([exe, *map(str, cmd[1:])], cwd=cwd, capture_output=True, text=True, env=full,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def dvc_baseline(tmp_path_factory):
    """A git repository with micro params in which `dvc repro` ran and its results were committed, as
    this project's own repository is: (path, commit). Tests may add commits; clone `commit` for a pristine copy."""
    project = copy_project(tmp_path_factory.mktemp("dvc") / "project")
    sh(project, "git", "init", "-q", "-b", "main")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline code")
    first = sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline results")
    return project, sh(project, "git", "rev-parse", "HEAD").stdout.strip(), first


def fresh_clone(dvc_baseline, dest: Path) -> Path:
    """A fresh clone of the dvc_baseline repository at its baseline commit."""
    origin, commit, _ = dvc_baseline
    sh(dest.parent, "git", "clone", "-q", origin, dest)
    sh(dest, "git", "checkout", "-q", commit)
    return dest


@pytest.fixture(scope="session")
def snakemade(dvc_baseline, tmp_path_factory):
    """A fresh clone of dvc_baseline after `snakemake --cores 1 --resources gpu=1`: a used workspace.
    Tests that edit it put back what they changed."""
    clone = fresh_clone(dvc_baseline, tmp_path_factory.mktemp("snakemade") / "clone")
    sh(clone, "snakemake", "--cores", "1", "--resources", "gpu=1")
    return clone


def pending(project, *targets) -> set[str]:
    """Rules that `snakemake --summary` plans to run for the targets: read from its TSV's plan column."""
    import csv
    import io

    proc = sh(project, "snakemake", "--summary", "--cores", "1", *targets)
    return {row["rule"] for row in csv.DictReader(io.StringIO(proc.stdout), delimiter="\t")
            if row["plan"] != "no update"}
