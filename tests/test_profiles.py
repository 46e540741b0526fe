"""Snakemake profiles: the SLURM one parses and asks for the GPUs runtime.gpus names (dry run, no cluster).

Needs the `cluster` extra (snakemake-executor-plugin-slurm), which the test command installs."""
import json
import re
import subprocess

import pytest

from conftest import BIN, copy_project, tool_env

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs


def dry_run(project, *args):
    proc = subprocess.run([str(BIN / "snakemake"), "--dry-run", "--forceall", *args], cwd=project,
                          capture_output=True, text=True, env=tool_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def job(out, rule):
    """The dry-run block of one rule: its resources and shell command."""
    block = out.split(f"rule {rule}:")[1].split("\n\n")[0]
    resources = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", block).group(1).split(", "))
    command = re.search(r"Shell command: (.*)", out.split(f"rule {rule}:")[1]).group(1)
    return resources, command


@pytest.mark.parametrize("gpus", [1, 2])
def test_slurm_profile_dry_run_shows_pretrain_with_its_gpus(tmp_path, gpus):
    project = copy_project(tmp_path / "project", **{"runtime.gpus": gpus})
    out = dry_run(project, "--profile", "workflow/profiles/slurm")
    resources, command = job(out, "pretrain")
    assert resources["gpu"] == str(gpus) and resources["slurm_partition"] == "<gpu-partition>"
    assert resources["cpus_per_gpu"] == "8"
    assert command.startswith("simclr pretrain "), command  # with gpus > 1 the CLI becomes torchrun itself
    assert json.loads(resources["simclr_runtime"])["gpus"] == gpus
    assert job(out, "probe")[0]["slurm_partition"] == "<cpu-partition>" and "gpu" not in job(out, "probe")[0]


def test_local_profile_dry_run(tmp_path):
    project = copy_project(tmp_path / "project")
    out = dry_run(project, "--profile", "workflow/profiles/local")
    resources, command = job(out, "pretrain")
    assert resources["gpu"] == "1" and command.startswith("simclr pretrain ")
