"""The offline-GPU-node command: its CPU smoke mode runs every part, so it cannot rot before a GPU sees it."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, make_layout, tool_env

sys.path.insert(0, str(ROOT / "benchmarks"))
import cpu_time_to_accuracy  # noqa: E402
import gpu_node_env  # noqa: E402


@pytest.mark.slow
def test_gpu_node_smoke_run_writes_the_whole_table(tmp_path):
    classes = ("airplane", "automobile", "bird")
    root = make_layout(tmp_path / "cifar", classes=classes, per_class=14, size=32)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_node.py"), "run", "--data", str(root),
                           "--out", str(out), "--work", str(tmp_path / "work"), "--smoke"],
                          capture_output=True, text=True, env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    table = (out / "results.md").read_text()
    assert table in proc.stdout  # printed and written: the same table
    for row in ("| time: pretrain |", "| time: probe |", "| epochs run / planned | 2 / 2 |", "| views/s",
                "| linear top-1 (SimCLR / random-init) |", "| kNN top-1, k=", "| 2-shot top-1",
                "| augmented views/s: batched on cpu vs per-image DataLoader (2 workers) |",
                "| full step vs model-only", "| exact, batch 16 in chunks of 4 vs 16 at once |",
                "| kNN monitor (epoch: top-1) | 1: ", "| kNN top-1, k=10 majority vote, cosine",
                "| one epoch (2 steps), where the time goes"):
        assert row in table, row
    assert "FAILED" not in table
    results = json.loads((out / "results.json").read_text())
    assert set(results["probe"]) == {"simclr", "random"}
    assert len(results["pretrain"]["epoch_time_s"]) == 2 and len(results["pretrain"]["knn"]) == 2
    # the smoke subset really is 12 images per class and split
    manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["images"] == 36


def test_dependency_check_names_a_package_the_node_lacks_or_has_too_old(monkeypatch, capsys):
    assert gpu_node_env.cmd_check(None) == 0  # this environment satisfies pyproject.toml
    monkeypatch.setattr(gpu_node_env, "requirements", lambda: ["torch>=99", "surely-not-installed-pkg", "numpy"])
    assert gpu_node_env.cmd_check(None) == 1
    err = capsys.readouterr().err
    assert "error: pyproject.toml: torch: needed >=99, found " in err
    assert "error: pyproject.toml: surely-not-installed-pkg: needed (any version), not installed" in err
    assert "numpy" not in err


def test_install_skips_what_is_there_and_refuses_an_empty_wheel_folder(tmp_path, capsys):
    import argparse

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with pytest.raises(SystemExit, match="expected the carried wheels"):
        gpu_node_env.cmd_install(argparse.Namespace(wheels=str(wheels), site=str(tmp_path / "site")))
    (wheels / "numpy-1.0.0-py3-none-any.whl").write_bytes(b"")  # installed already: never opened
    assert gpu_node_env.cmd_install(argparse.Namespace(wheels=str(wheels), site=str(tmp_path / "site"))) == 0
    assert "numpy" in capsys.readouterr().out and not (tmp_path / "site").exists()


def run_on_micro(tmp_path, script, *args):
    """benchmarks/<script> on a micro dataset (conftest.prepare_micro) with its manifest; checks it exits 0."""
    from conftest import prepare_micro

    base, _ = prepare_micro(tmp_path / "p")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--manifest", str(base / "manifest.json"),
                           *args], capture_output=True, text=True, env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_profile_epoch_writes_the_breakdown_and_the_profiler_table(tmp_path):
    out = tmp_path / "out"
    run_on_micro(tmp_path, "profile_epoch.py", "--steps", "2", "--profiled", "1", "--out", str(out))
    report = json.loads((out / "profile.json").read_text())
    assert set(report["parts_s"]) == {"augmentation", "forward + loss", "backward", "optimiser"}
    assert sum(report["parts_s"].values()) <= report["wall_s"] and all(v > 0 for v in report["parts_s"].values())
    text = (out / "profile.md").read_text()
    assert "| backward |" in text and "Self CPU" in text  # the shares and torch.profiler's table


@pytest.mark.slow
def test_cpu_step_times_each_setting_and_traces_fill(tmp_path):
    """benchmarks/cpu_step.py on a micro dataset (no peer, no compile): every setting asked is timed, and
    the profile of `today` (deterministic mode filling new tensors) shows aten::fill_, the fastest less."""
    import yaml

    out, preset = tmp_path / "cpu_step.json", tmp_path / "preset.yaml"
    small = yaml.safe_load((ROOT / "configs" / "cifar10-cpu.yaml").read_text())
    small["train"]["batch_size"] = 32  # bf16 is emulated (10x slower) on CPUs without bf16 units
    preset.write_text(yaml.safe_dump(small))
    proc = run_on_micro(tmp_path, "cpu_step.py", "--preset", str(preset), "--settings", "today,fp32,bf16",
                        "--rounds", "1", "--steps", "1", "--no-peer", "--no-cold", "--no-avx2", "--json", str(out))
    result = json.loads(out.read_text())
    assert set(result["images_per_s"]) == {"today", "fp32", "bf16"}
    assert all(len(v) == 1 and v[0] > 0 for v in result["images_per_s"].values())
    assert "| today |" in proc.stdout and "| bf16 |" in proc.stdout

    def fill(name):
        return sum(row["self_share"] for row in result["profile"][name] if row["op"] == "aten::fill_")

    assert fill("today") > 0.02
    fastest = [n for n in result["profile"] if n != "today"]
    assert all(fill(n) < fill("today") / 2 for n in fastest)


@pytest.mark.slow
def test_cpu_time_to_accuracy_runs_today_and_the_preset_and_scores_both(tmp_path):
    """benchmarks/cpu_time_to_accuracy.py on a micro dataset, without the peer (lightly is not a test
    dependency): today's schedule sets the budget, the preset runs as committed, both are scored."""
    out = tmp_path / "tta.json"
    proc = run_on_micro(tmp_path, "cpu_time_to_accuracy.py", "--seeds", "0", "--sides", "today,preset",
                        "--json", str(out))
    result = json.loads(out.read_text())
    (today,), (preset,) = result["rows"]["today"], result["rows"]["preset"]
    assert result["budget_s"] == pytest.approx(today["pretrain_s"])
    assert (today["epochs"], today["precision"]) == (5, "fp32")
    from simclr import config

    committed = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-cpu.yaml")["train"]["epochs"]
    assert preset["epochs"] == committed != 5 and preset["precision"] in ("fp32", "bf16")  # auto, resolved
    for row in (today, preset):
        assert 0 < row["knn_top1"] <= 1 and 0 < row["knn_vote_top1"] <= 1
    assert "| today |" in proc.stdout and "| preset |" in proc.stdout


def test_time_to_accuracy_summary_with_matched_budgets_names_them_and_the_lead():
    """--match without `today` has no one budget (each peer ran for its seed's preset time): the summary
    says so instead of failing on it (it did, after an hour of runs), and the lead is the preset's
    worst k=10 vote minus the peer's best."""
    def row(seed, s, vote, **kw):
        return {"seed": seed, "pretrain_s": s, "knn_vote_top1": vote, "knn_top1": vote - 0.01, **kw}

    rows = {"preset": [row(0, 600.0, 0.50, epochs=7, precision="fp32"),
                       row(1, 480.0, 0.48, epochs=7, precision="fp32")],
            "peer": [row(0, 600.4, 0.47, steps=700, budget_s=600.0), row(1, 480.2, 0.45, steps=480, budget_s=480.0)]}
    lines = cpu_time_to_accuracy.summary(rows, None)
    assert lines[0].startswith("pretraining budget: each seed's preset time (--match)")
    assert "| preset | 600, 480 | 7 epochs, fp32 | 50.00, 48.00 | 49.00, 47.00 |" in lines
    assert "| peer | 600, 480 | 700-480 steps | 47.00, 45.00 | 46.00, 44.00 |" in lines
    assert lines[-1].endswith(f"{100 * (0.48 - 0.47):+.2f} points")
    assert cpu_time_to_accuracy.summary(rows, 540.0)[0].startswith("pretraining budget 540 s")


def test_today_is_the_cpu_preset_before_35():
    """benchmarks/cifar10-cpu-today.yaml, the `today` side of cpu_step.py and cpu_time_to_accuracy.py, is
    configs/cifar10-cpu.yaml as committed before #35 (e380ee5^), key for key; laid over params.yaml it is
    the step and schedule the issue's ratios start from, whatever the preset has become since."""
    import yaml

    old = subprocess.run(["git", "show", "e380ee5^:configs/cifar10-cpu.yaml"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert yaml.safe_load(cpu_time_to_accuracy.TODAY.read_text()) == yaml.safe_load(old)
    from simclr import config

    today = config.load_params(ROOT / "params.yaml", cpu_time_to_accuracy.TODAY)
    preset = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-cpu.yaml")
    assert (today["train"]["epochs"], today["train"]["precision"], today["train"]["temperature"]) == (5, "fp32", 0.5)
    assert today["model"]["stored_size"] is None and today != preset
