"""The DAG is written twice (Snakefile rules, dvc.yaml stages); they must describe the same pipeline,
and each stage's code deps must be exactly the package files it imports (simclr.deps)."""
import ast
import csv
import io
import json
import re
import shlex
import subprocess

import pytest
import yaml

from conftest import BIN, ROOT, tool_env
from simclr import config, deps

STAGES = ["prepare", "validate", "pretrain", "extract", "probe"]
RESULTS = "results/"


def snakemake_jobs(project):
    """rule -> {cmd, config, runtime, input, output} of the jobs Snakemake ran in `project`, from
    `snakemake --detailed-summary` (a TSV of its records, one row per output)."""
    proc = subprocess.run([str(BIN / "snakemake"), "--detailed-summary", "--cores", "1"],
                          cwd=project, capture_output=True, text=True, env=tool_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    jobs = {}
    for row in csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"):
        job = jobs.setdefault(row["rule"], {"input": set(row["input-file(s)"].split(",")) - {""}, "output": set()})
        job["output"].add(row["output_file"])
        words = shlex.split(row["shellcmd"].split(" 2>&1 | tee ")[0])
        for flag in ("--config", "--runtime"):
            if flag in words:
                i = words.index(flag)
                job[flag[2:]] = json.loads(words[i + 1])
                del words[i:i + 2]
        job["cmd"] = words
    return jobs


def dvc_stages(project=ROOT):
    params = yaml.safe_load((project / "params.yaml").read_text())
    text = re.sub(r"\$\{([\w.]+)\}", lambda m: str(config.get(params, m.group(1))), (project / "dvc.yaml").read_text())
    return yaml.safe_load(text)["stages"]


def paths(entries):
    return {e if isinstance(e, str) else next(iter(e)) for e in entries}


def local(path: str) -> str:
    """A Snakemake path with its results/ root taken off: the path DVC uses."""
    assert path.startswith(RESULTS) or path.startswith("src/"), path
    return path[len(RESULTS):] if path.startswith(RESULTS) else path


@pytest.fixture(scope="module")
def both(snakemade):
    """What Snakemake ran in a clone of this project (micro params), and that clone's dvc.yaml."""
    return snakemake_jobs(snakemade), dvc_stages(snakemade)


@pytest.fixture(scope="module")
def params(snakemade):
    return config.load_params(snakemade / "params.yaml")


@pytest.mark.slow
def test_same_stages(both):
    jobs, stages = both
    assert list(stages) == STAGES
    assert set(jobs) == set(STAGES)  # `all` has no outputs; the dvc_output guard is in no DAG


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_same_command(both, stage):
    jobs, stages = both
    cmd = [local(w) if w.startswith(RESULTS) else w for w in jobs[stage]["cmd"]]
    # Snakemake keeps its checkpoints under results/; DVC leaves them to the CLI's default (the user
    # cache), so that queued experiments in temporary workspaces can resume
    if "--checkpoint-dir" in cmd:
        i = cmd.index("--checkpoint-dir")
        assert cmd[i + 1] == "checkpoints/pretrain"  # results/checkpoints/pretrain
        del cmd[i:i + 2]
    assert "--checkpoint-dir" not in stages[stage]["cmd"]
    assert cmd == shlex.split(stages[stage]["cmd"])


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_same_inputs_and_outputs(both, stage):
    jobs, stages = both
    s = stages[stage]
    assert {local(p) for p in jobs[stage]["input"]} == set(s["deps"])
    outs = paths(s.get("outs", [])) | paths(s.get("metrics", [])) | paths(s.get("plots", []))
    # DVC may declare a folder (DVCLive's plots/metrics) whose files the Snakefile lists one by one
    listed = {next((o for o in outs if local(p).startswith(o + "/")), local(p)) for p in jobs[stage]["output"]}
    assert listed == outs


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_same_params_and_runtime_tracked_by_neither(both, params, stage):
    jobs, stages = both
    assert stages[stage]["params"] == config.STAGE_PARAMS[stage]
    assert jobs[stage]["config"] == config.stage_params(params, stage)
    assert "runtime" not in jobs[stage]["config"] and not any(p.startswith("runtime") for p in stages[stage]["params"])
    if stage in config.RUNTIME_STAGES:
        assert jobs[stage]["runtime"] == params["runtime"]  # passed as a resource, which triggers nothing


def imported_modules(path):
    """Every simclr module a file imports, found by a plain walk of its syntax tree (a second opinion)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return {m for m in found if (deps.PACKAGE / f"{m}.py").is_file()}  # modules, not names such as __version__


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_code_deps_are_the_import_closure(stage):
    s = dvc_stages()[stage]
    code = {d for d in s["deps"] if d.startswith("src/")}
    assert code == set(deps.code_deps(stage)), "run: python -c 'from simclr import deps; print(deps.code_deps(\"%s\"))'" % stage
    # the closure holds the stage module and, for each module in it, what that module imports (bar other stages)
    names = {c.rsplit("/", 1)[1] for c in code}
    assert f"{stage}.py" in names and "params.schema.yaml" in names
    for name in names - {"params.schema.yaml"}:
        for module in imported_modules(deps.PACKAGE / name) - set(STAGES) - set(deps.HELPERS):
            assert f"{module}.py" in names, f"{stage}: {name} imports {module}"
    assert not {f"{other}.py" for other in STAGES if other != stage} & names  # no stage imports another
    assert not {f"{helper}.py" for helper in deps.HELPERS} & names  # nor a helper (simclr sweep, load_encoder)


def test_cli_imports_no_plumbing_lazily():
    """cli.py's function-level imports are stage (or helper) modules only, so each stage's closure holds
    only its own."""
    tree = ast.parse((deps.PACKAGE / "cli.py").read_text())
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                names = [node.module] if node.module else [a.name for a in node.names]
                assert set(names) <= set(STAGES) | set(deps.HELPERS), f"cli.{fn.name} imports {names}"


def test_a_new_import_enters_the_closure(tmp_path, monkeypatch):
    pkg = tmp_path / "simclr"
    pkg.mkdir()
    for f in deps.PACKAGE.iterdir():
        if f.suffix in (".py", ".yaml"):
            (pkg / f.name).write_text(f.read_text())
    (pkg / "extra.py").write_text("X = 1\n")
    monkeypatch.setattr(deps, "PACKAGE", pkg)
    deps.closure.cache_clear()
    try:
        assert "extra.py" not in deps.closure("probe")
        (pkg / "knn.py").write_text((pkg / "knn.py").read_text() + "\ndef _late():\n    from .extra import X\n")
        deps.closure.cache_clear()
        assert "extra.py" in deps.closure("probe") and "extra.py" not in deps.closure("prepare")
    finally:
        deps.closure.cache_clear()
