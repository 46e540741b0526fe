"""What a person watching a run sees: DVCLive files, the kNN monitor, progress bars or log lines."""
import contextlib
import io
import json
import re

import pytest

from conftest import prepare_micro
from simclr import config, live as live_log, pretrain as pt
from simclr.progress import progress

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs

EPOCHS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-epoch micro pretrain with the kNN monitor every 2nd epoch, logged through DVCLive."""
    base, params = prepare_micro(tmp_path_factory.mktemp("live"), **{"train.epochs": EPOCHS, "train.knn_every": 2})
    p = config.given(config.load_params(params), "pretrain")
    pt.pretrain(p, base / "manifest.json", base / "model.pt", base / "live", base / "ckpt", log=lambda m: None)
    return base, p


def history(base, name):
    lines = (base / "live" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
    return header, rows


def test_dvclive_writes_one_row_per_epoch_of_every_metric(run):
    base, params = run
    assert config.live_metrics(params) == ["loss", "lr", "epoch_time_s", "views_per_s", "gpu_peak_mib", "peak_rss_mib",
                                              "knn_top1"]
    for name in config.live_metrics(params):
        header, rows = history(base, name)
        assert header == ["step", name]
        expected = ["2", "3"] if name == "knn_top1" else [str(e) for e in range(1, EPOCHS + 1)]  # kNN: every 2nd and the last
        assert [r[0] for r in rows] == expected, name  # DVCLive's step is the epoch
        assert all(float(r[1]) >= 0 for r in rows)
    summary = json.loads((base / "live" / "metrics.json").read_text())
    assert set(summary) == set(config.live_metrics(params)) | {"step"} and summary["step"] == EPOCHS
    assert 0 <= summary["knn_top1"] <= 1
    assert not (base / "live" / "dvc.yaml").exists()


def test_knn_monitor_matches_the_probe_stage_knn_on_the_same_features(run):
    """The on-device monitor and an independent route (extract's features + sklearn) agree."""
    import numpy as np
    import torch
    from sklearn.neighbors import KNeighborsClassifier

    from simclr import encoder, model as model_lib
    from simclr.cache import load_split

    base, params = run
    net = model_lib.build(params, 0)
    net.load_state_dict(torch.load(base / "model.pt", weights_only=False)["model"])
    manifest = json.loads((base / "manifest.json").read_text())
    splits = {s: load_split(manifest, s, params["model"]["input_size"]) for s in ("train", "test")}
    got = pt.monitor_knn(net, splits, torch.device("cpu"), "fp32", False, params["model"]["input_size"])
    assert net.training  # the monitor hands the model back in train mode
    feats = {s: encoder.features(net.encoder, splits[s][0], 64, "cpu", contextlib.nullcontext).numpy() for s in splits}
    k = min(200, len(feats["train"]))
    ref = KNeighborsClassifier(k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / 0.1))
    ref.fit(feats["train"], splits["train"][1].numpy())
    assert got == pytest.approx(np.mean(ref.predict(feats["test"]) == splits["test"][1].numpy()), abs=1 / 40)


class Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_is_plain_periodic_lines_off_a_terminal():
    lines = []
    stream = Stream(tty=False)
    assert list(progress(range(5), 5, "epoch 1/2", lines.append, every_s=0, stream=stream)) == list(range(5))
    assert [line.split(" (")[0] for line in lines] == [f"epoch 1/2: {i}/5" for i in range(1, 5)]  # not after the last
    assert all(re.fullmatch(r"epoch 1/2: \d/5 \(\d+\.\d\d/s\)", line) for line in lines)
    assert stream.getvalue() == ""  # no bar, no carriage returns in a log file


def test_progress_lines_are_at_most_one_per_interval(monkeypatch):
    from simclr import progress as progress_module

    clock = iter([0.0, 10.0, 29.9, 30.0, 45.0, 59.9, 60.1, 61.0, 62.0])  # start, then one reading per item
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    lines = []
    list(progress(range(8), 9, "epoch", lines.append, every_s=30, stream=Stream(tty=False)))
    assert [line.split(" (")[0] for line in lines] == ["epoch: 3/9", "epoch: 6/9"]  # at 30.0 s and 60.1 s


def test_progress_is_a_tqdm_bar_on_a_terminal():
    lines = []
    stream = Stream(tty=True)
    assert list(progress(range(5), 5, "extract", lines.append, stream=stream)) == list(range(5))
    assert lines == [] and "\r" in stream.getvalue() and "extract" in stream.getvalue()


def test_progress_of_other_ranks_is_silent():
    lines, stream = [], Stream(tty=True)
    assert list(progress(range(3), 3, "x", lines.append, every_s=0, stream=stream, enabled=False)) == [0, 1, 2]
    assert lines == [] and stream.getvalue() == ""


def test_plain_writer_writes_what_dvclive_writes(tmp_path):
    """Without dvclive (an offline GPU node), pretrain's own writer leaves the same files and values."""
    from dvclive import Live

    rows = [{"epoch": 1, "loss": 4.5, "lr": 0.1}, {"epoch": 2, "loss": 4.25, "lr": 0.05, "knn_top1": 0.5}]
    folders = {}
    for name, make in (("dvclive", lambda d: Live(dir=str(d), save_dvc_exp=False, dvcyaml=None)),
                       ("plain", live_log.PlainLive)):
        folder = tmp_path / name
        live = make(folder)
        for row in rows:
            live_log.log_epoch(live, row)
        live.end()
        folders[name] = folder
    for metric in ("loss", "lr", "knn_top1"):
        files = [(f / "plots" / "metrics" / f"{metric}.tsv").read_text() for f in folders.values()]
        assert files[0] == files[1], metric
    summaries = [json.loads((f / "metrics.json").read_text()) for f in folders.values()]
    assert summaries[0] == summaries[1] == {"loss": 4.25, "lr": 0.05, "knn_top1": 0.5, "step": 2}


def test_pretrain_falls_back_to_the_plain_writer_without_dvclive(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dvclive(name, *args, **kwargs):
        if name == "dvclive" or name.startswith("dvclive."):
            raise ImportError("No module named 'dvclive'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dvclive)
    live = live_log.open_live(tmp_path / "live", [{"epoch": 1, "loss": 3.0}])
    assert isinstance(live, live_log.PlainLive)
    assert (tmp_path / "live" / "plots" / "metrics" / "loss.tsv").read_text() == "step\tloss\n1\t3.0\n"
