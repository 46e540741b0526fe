"""The GPU reproduction command runs on CPU on a small subset, so it cannot rot."""
import subprocess

from conftest import BIN, ROOT, make_layout, tool_env


def test_cifar10_gpu_script_runs_on_a_cpu_subset(tmp_path):
    classes = ("airplane", "automobile", "bird")
    root = make_layout(tmp_path / "cifar", classes=classes, per_class=6, size=32)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "cifar10_gpu.sh"), str(root), "--limit-per-class", "4", "--epochs", "1",
         "--device", "cpu", "--work", str(tmp_path / "run"),
         "--set", "train.compile=false", "--set", "train.precision=fp32", "--set", "extract.precision=fp32",
         "--set", "train.batch_size=8", "--set", "model.input_size=8", "--set", "probe.shots=1",
         "--set", "probe.knn_k=5", "--set", "probe.c_num=2", "--set", "probe.val_fraction=0.5"],
        capture_output=True, text=True, env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = proc.stdout.strip().splitlines()[-12:]
    text = "\n".join(table)
    for row in ("| epochs", "| time pretrain", "| views/s", "| peak GPU memory", "| linear top-1 (simclr / random)",
                "| kNN top-1", "| 1-shot top-1"):
        assert row in text, text
    epochs = [line for line in table if line.startswith("| epochs")]
    assert epochs and epochs[0].rstrip().endswith("| 1 |")
    # the subset really is 4 per class and split
    manifest = (tmp_path / "run" / "manifest.json").read_text()
    assert '"images": 12' in manifest
