"""The DAG is written twice (Snakefile rules, dvc.yaml stages); they must describe the same pipeline."""
import json
import re
import shlex
import subprocess

import pytest
import yaml

from conftest import BIN, ROOT, tool_env
from simclr import config

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs

STAGES = ["prepare", "validate", "pretrain", "extract", "probe"]


def snakemake_jobs():
    """rule -> {cmd, input, output, config} from `snakemake --dry-run --printshellcmds`."""
    proc = subprocess.run([str(BIN / "snakemake"), "--forceall", "--dry-run", "--printshellcmds", "--cores", "1"],
                          cwd=ROOT, capture_output=True, text=True, env=tool_env())
    assert proc.returncode == 0, proc.stderr
    jobs, current = {}, None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            current = jobs.setdefault(m.group(1), {"input": [], "output": []})
        elif current is not None and (m := re.match(r"^    (input|output): (.*)$", line)):
            current[m.group(1)] = [p.strip() for p in m.group(2).split(",")]
        elif current is not None and line.startswith("Shell command: ") and line != "Shell command: None":
            words = shlex.split(line[len("Shell command: "):].split(" 2>&1 | tee ")[0])
            i = words.index("--config")
            current["config"] = json.loads(words[i + 1])
            current["cmd"] = words[:i] + words[i + 2:]
    return jobs


def dvc_stages():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = re.sub(r"\$\{([\w.]+)\}", lambda m: str(config.get(params, m.group(1))), (ROOT / "dvc.yaml").read_text())
    return yaml.safe_load(text)["stages"]


def paths(entries):
    return {e if isinstance(e, str) else next(iter(e)) for e in entries}


@pytest.fixture(scope="module")
def both():
    return snakemake_jobs(), dvc_stages()


def test_same_stages(both):
    jobs, stages = both
    assert list(stages) == STAGES
    assert set(jobs) == set(STAGES) | {"all"}


@pytest.mark.parametrize("stage", STAGES)
def test_same_command(both, stage):
    jobs, stages = both
    assert jobs[stage]["cmd"] == shlex.split(stages[stage]["cmd"])


@pytest.mark.parametrize("stage", STAGES)
def test_same_inputs_and_outputs(both, stage):
    jobs, stages = both
    s = stages[stage]
    data_deps = {d for d in s["deps"] if not d.startswith("src/")}  # DVC also tracks the code
    assert set(jobs[stage]["input"]) == data_deps
    outs = paths(s.get("outs", [])) | paths(s.get("metrics", [])) | paths(s.get("plots", []))
    # DVC may declare a folder (DVCLive's plots/metrics) whose files the Snakefile lists one by one
    listed = {next((o for o in outs if p.startswith(o + "/")), p) for p in jobs[stage]["output"]}
    assert listed == outs


@pytest.mark.parametrize("stage", STAGES)
def test_same_params(both, stage):
    jobs, stages = both
    assert stages[stage]["params"] == config.STAGE_PARAMS[stage]
    params = config.load_params(ROOT / "params.yaml")
    assert jobs[stage]["config"] == config.stage_params(params, stage)


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_lists_the_stage_module_as_code_dep(both, stage):
    _, stages = both
    assert f"src/simclr/{stage}.py" in stages[stage]["deps"]
    assert (ROOT / "workflow" / "rules" / f"{stage}.smk").exists()
