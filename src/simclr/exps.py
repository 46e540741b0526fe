"""`simclr exps`: DVC's experiments in a table that fits a terminal (dvc exp show lists every params
key and every metric: some 80 columns here). One row per revision and experiment: the headline probe
metrics of the SimCLR encoder, pretrain's last loss, and the params keys that differ from the
baseline's. It reads `dvc exp show --json` and writes nothing."""
from __future__ import annotations

import json
import subprocess

from .errors import UserError

PROBE, PRETRAIN = "metrics/probe.json", "metrics/pretrain/metrics.json"
COLUMNS = (("linear", PROBE, ("simclr", "linear_top1")), ("kNN k=10", PROBE, ("simclr", "knn_vote_top1")),
           ("kNN k=200", PROBE, ("simclr", "knn_top1")), ("few-shot", PROBE, ("simclr", "fewshot_top1")),
           ("loss", PRETRAIN, ("loss",)))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _get(rev: dict, path: str, keys: tuple):
    node = ((rev.get("data") or {}).get("metrics") or {}).get(path, {}).get("data", {})
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def rows(shown: list) -> list[dict]:
    """(name, metric values, changed params) for the workspace, each commit and each of its experiments,
    params compared with the first commit listed (the baseline `dvc exp show` compares with)."""
    def params(rev):
        return _flat(((rev.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data", {}))

    base = params(shown[1] if len(shown) > 1 else shown[0])
    out = []

    def add(rev, name):
        p = params(rev)
        changed = {k: v for k, v in p.items() if base.get(k) != v and not k.startswith("runtime.")}
        out.append({"name": name, **{c: _get(rev, path, keys) for c, path, keys in COLUMNS},
                    "changed": ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(changed.items()))})

    for rev in shown:
        add(rev, rev.get("name") or (rev["rev"] if rev["rev"] == "workspace" else rev["rev"][:7]))
        for exp in rev.get("experiments") or []:
            for run in exp.get("revs", []):
                add(run, f"  {run.get('name') or run['rev'][:7]}")
    return out


def render(table: list[dict], width: int = 120) -> str:
    heads = ["experiment", *[c for c, _, _ in COLUMNS], "changed params"]
    cells = [[r["name"], *[("" if r[c] is None else f"{100 * r[c]:.2f}" if c != "loss" else f"{r[c]:.3f}")
                           for c, _, _ in COLUMNS], r["changed"]] for r in table]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads[:-1])]
    lines = []
    for row in [heads, *cells]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
        lines.append(line if len(line) <= width else line[:width - 3] + "...")
    return "\n".join(line.rstrip() for line in lines)


def show(width: int = 120) -> str:
    try:
        proc = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("simclr exps: expected dvc on PATH (pip install -e '.[pipeline]'), found none") from None
    if proc.returncode != 0:
        raise UserError(f"simclr exps: dvc exp show failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return render(rows(json.loads(proc.stdout)), width)
