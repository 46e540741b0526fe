"""Pretrain's per-epoch log: DVCLive's files (metrics.json, plots/metrics/<name>.tsv), one step per epoch.

It never writes dvc.yaml and never saves a DVC experiment itself: under `dvc exp run` DVC records
the experiment, and under Snakemake there is none to record. Without dvclive installed (an offline
GPU node), PlainLive writes the same files.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import io


class PlainLive:
    """DVCLive's files (metrics.json and plots/metrics/<name>.tsv, one row per step) written without dvclive."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.step = 0
        self.latest: dict = {}
        shutil.rmtree(self.folder / "plots" / "metrics", ignore_errors=True)  # a fresh run, as Live() starts
        (self.folder / "plots" / "metrics").mkdir(parents=True, exist_ok=True)

    def log_metric(self, name: str, value) -> None:
        path = self.folder / "plots" / "metrics" / f"{name}.tsv"
        new = not path.exists()
        with path.open("a") as f:
            f.write((f"step\t{name}\n" if new else "") + f"{self.step}\t{value}\n")
        self.latest[name] = value

    def make_summary(self) -> None:
        io.write_json(self.folder / "metrics.json", {**self.latest, "step": self.step})

    def end(self) -> None:
        self.make_summary()


def open_live(live_dir: Path, rows: list[dict]):
    """A logger that writes only into live_dir, holding `rows` (a resumed run replays its logged
    epochs, so the folder is the uninterrupted run's)."""
    try:
        from dvclive import Live
    except ImportError:
        live = PlainLive(live_dir)
    else:
        live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None)  # starts the folder afresh
    for row in rows:
        log_epoch(live, row)
    return live


def log_epoch(live, row: dict) -> None:
    live.step = row["epoch"]
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.make_summary()
