"""Sweeps: a grid of overrides over one base config, run point by point by Snakemake, summed up as
one CSV and one PNG. Not a stage: the points are the pipeline's own pretrain/extract/probe jobs
(workflow/rules/sweep.smk); this module names the points and writes the table and the plot.

A sweep file (sweeps/<name>.yaml):

    base: params.yaml            # or a preset, laid over the workflow's config (params.yaml means as it is)
    set:                         # optional: values every point takes (not in the folder names)
      train.epochs: 100
    grid:                        # a mapping of key -> values, or a list of them (their union)
      - train.accumulate: [naive, exact]
        train.seed: [0, 1, 2]
    plot:
      x: train.chunk_size        # swept key on the x axis (points where it is null: the reference line)
      y: simclr.linear_top1      # a probe.json metric
      lines: train.accumulate    # one line per value (optional); mean and spread over the other keys
      log_x: true

Every point gets its own folder, named by its values: accumulate=naive,seed=0.
"""
from __future__ import annotations

import csv
import io as _io
import itertools
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config, io
from .errors import UserError

SHARED = {
    "data": "the points share the workflow's prepared dataset",
    "validate": "the points share the workflow's manifest",
    "runtime": "runtime is how a run executes, not what it computes",
}
NAME_VALUE = re.compile(r"[A-Za-z0-9._+-]+")


class SweepError(UserError):
    """A sweep file that cannot run; raised before any job starts, naming the file and the key."""


@dataclass
class Sweep:
    name: str
    path: Path
    base: str | None                  # a preset laid over the workflow's config; None: the config as it is
    base_params: dict                 # the workflow's config with the base laid over it, validated
    fixed: dict[str, Any]             # `set`: dotted key -> value, at every point
    grids: list[dict[str, list]]      # the grid as written (a list of key -> values)
    keys: list[str]                   # swept keys, in the order they first appear
    points: dict[str, dict[str, Any]]  # folder name -> {key: value} (only the swept keys)
    plot: dict


def _fail(path: Path, msg: str) -> SweepError:
    return SweepError(f"{path}: {msg}")


def base_of(path: str | Path) -> str | None:
    """The preset a sweep file names as its base (None: params.yaml, the workflow's config as it is)."""
    return _base(_read(Path(path)))


def _base(spec: dict) -> str | None:
    base = spec.get("base", "params.yaml")
    return None if base in (None, "params.yaml") else str(base)


def _read(path: Path) -> dict:
    try:
        spec = config.read_yaml(path)
    except config.ParamsError as exc:
        raise SweepError(str(exc).replace("params file", "sweep file")) from None
    if not isinstance(spec, dict):
        raise _fail(path, f"expected a mapping with base, grid and plot, found {type(spec).__name__}")
    unknown = sorted(set(spec) - {"base", "set", "grid", "plot"})
    if unknown:
        raise _fail(path, f"{unknown[0]}: unknown key; expected base, set, grid, plot")
    return spec


def _grids(path: Path, grid: Any) -> list[dict[str, list]]:
    grids = grid if isinstance(grid, list) else [grid]
    if not grids or not all(isinstance(g, dict) and g for g in grids):
        raise _fail(path, f"grid: expected a mapping of key -> list of values (or a list of them), found {grid!r}")
    for g in grids:
        for key, values in g.items():
            if not isinstance(values, list) or not values:
                raise _fail(path, f"grid: {key}: expected a non-empty list of values, found {values!r}")
    return grids


def _check_key(path: Path, where: str, key: str, params: dict) -> None:
    section = str(key).split(".")[0]
    if section in SHARED:
        raise _fail(path, f"{where}: {key}: cannot be swept: {SHARED[section]}")
    if not config.has(params, str(key)) or isinstance(config.get(params, str(key)), dict):
        near = config.nearest_key(str(key), config.load_schema())
        raise _fail(path, f"{where}: {key}: unknown key; " + (f"did you mean {near}? " if near else "") +
                    "expected section.key as in params.yaml (workflow/schemas/params.schema.yaml)")


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return "_".join(_value_text(v) for v in value)
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def point_name(values: dict[str, Any]) -> str:
    """The folder name of a point: key=value pairs joined by commas, keys by their last part
    (the whole dotted key where two swept keys share a last part)."""
    last = [k.split(".")[-1] for k in values]
    names = [short if last.count(short) == 1 else key for key, short in zip(values, last)]
    return ",".join(f"{n}={_value_text(v)}" for n, v in zip(names, values.values()))


def _laid(base: str | None, path: Path, params: dict) -> dict:
    """The workflow's config with the sweep's base laid over it, validated."""
    if base is None:
        return params
    return config.validate_params(config.merge(params, config.load_preset(base)), f"{base} (the base of {path})")


def point_params(sweep: Sweep, point: str) -> dict:
    """All params of one point: the base with the point's values set, validated (errors name the point)."""
    out = json.loads(json.dumps(sweep.base_params))
    for key, value in {**sweep.fixed, **sweep.points[point]}.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return config.validate_params(out, f"{sweep.path}: point {point}")
    except config.ParamsError as exc:
        raise SweepError(str(exc)) from None


def load(path: str | Path, params: dict) -> Sweep:
    """Read and check a sweep file against the workflow's config `params`: every grid key known and
    sweepable, every point valid, the base sharing the workflow's dataset. Raises SweepError."""
    path = Path(path)
    spec = _read(path)
    base = _base(spec)
    if base is not None and not Path(base).is_file():
        raise _fail(path, f"base: {base}: file not found (expected params.yaml or a preset in configs/)")
    base_cfg = _laid(base, path, params)
    sweep = Sweep(name=path.stem, path=path, base=base, base_params=base_cfg, fixed={}, grids=[],
                  keys=[], points={}, plot={})
    for stage in ("prepare", "validate"):
        if config.stage_params(base_cfg, stage) != config.stage_params(params, stage):
            key = next(f"{s}.{k}" for s in config.STAGE_PARAMS[stage] for k in base_cfg[s]
                       if base_cfg[s][k] != params[s][k])
            raise _fail(path, f"base: {sweep.base} sets {key} to {config.get(base_cfg, key)!r}, the workflow's config "
                              f"has {config.get(params, key)!r}; the points share the workflow's prepared dataset, "
                              f"so run the sweep with `--configfile {sweep.base}`")
    fixed = spec.get("set") or {}
    if not isinstance(fixed, dict):
        raise _fail(path, f"set: expected a mapping of key -> value, found {fixed!r}")
    for key, value in fixed.items():
        _check_key(path, "set", key, base_cfg)
        sweep.fixed[key] = value
    sweep.grids = _grids(path, spec.get("grid"))
    for grid in sweep.grids:
        for key in grid:
            _check_key(path, "grid", key, base_cfg)
            if key in sweep.fixed:
                raise _fail(path, f"grid: {key}: also under set; give it in one place")
            if key not in sweep.keys:
                sweep.keys.append(key)
        for combo in itertools.product(*grid.values()):
            values = dict(zip(grid, combo))
            name = point_name(values)
            if not NAME_VALUE.fullmatch(name.replace("=", "").replace(",", "")):
                raise _fail(path, f"grid: point {name}: expected values made of letters, digits and ._+- "
                                  "(they name its folder)")
            if name in sweep.points:
                raise _fail(path, f"grid: point {name} appears twice")
            sweep.points[name] = values
    sweep.plot = _plot_spec(path, spec.get("plot") or {}, sweep.keys)
    for point in sweep.points:
        point_params(sweep, point)
    return sweep


METRIC = re.compile(r"(simclr|random)\.(linear_top1|linear_top5|knn_top1|knn_vote_top1|fewshot_top1)")


def _plot_spec(path: Path, plot: dict, keys: list[str]) -> dict:
    if not isinstance(plot, dict):
        raise _fail(path, f"plot: expected a mapping (x, y, lines, log_x), found {plot!r}")
    unknown = sorted(set(plot) - {"x", "y", "lines", "log_x"})
    if unknown:
        raise _fail(path, f"plot: {unknown[0]}: unknown key; expected x, y, lines, log_x")
    out = {"x": plot.get("x", keys[0]), "y": plot.get("y", "simclr.linear_top1"),
           "lines": plot.get("lines"), "log_x": bool(plot.get("log_x", False))}
    for role in ("x", "lines"):
        if out[role] is not None and out[role] not in keys:
            raise _fail(path, f"plot: {role}: {out[role]}: expected one of the swept keys {keys}")
    if not METRIC.fullmatch(str(out["y"])):
        raise _fail(path, f"plot: y: {out['y']}: expected a probe metric such as simclr.linear_top1, "
                          "simclr.knn_top1 or simclr.fewshot_top1")
    return out


# --- the table and the plot -----------------------------------------------------------------------

def _flat(obj: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


COST = ("epoch_time_s", "peak_rss_mib", "gpu_peak_mib")  # pretrain's cost: the median over its epochs


def pretrain_cost(live_dir: Path) -> dict:
    """pretrain.<name>: the median of each cost series pretrain logged (plots/metrics/<name>.tsv), and its
    last-epoch loss; an absent series (a run of an earlier version) is left out."""
    out = {}
    for name in ("loss", *COST):
        path = live_dir / "plots" / "metrics" / f"{name}.tsv"
        if path.exists():
            values = [float(line.split("\t")[1]) for line in path.read_text().splitlines()[1:] if line.strip()]
            if values:
                out[f"pretrain.{name}"] = values[-1] if name == "loss" else statistics.median(values)
    return out


def rows(sweep: Sweep, runs: Path) -> list[dict]:
    """One row per point: its folder name, swept values, every metric of its probe.json (flattened
    as `dvc exp show` names them: simclr.linear_top1, ..., then random.*), then pretrain's cost."""
    out = []
    for point, values in sweep.points.items():
        metrics = io.read_json(runs / point / "metrics" / "probe.json", "probe metrics written by simclr probe",
                               keys=("simclr",))
        flat = _flat(metrics)
        out.append({"point": point, **values, **{k: flat[k] for k in sorted(flat, key=lambda k: k.split(".")[0] != "simclr")},
                    **pretrain_cost(runs / point / "metrics" / "pretrain")})
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, bool)):
        return json.dumps(value)
    return str(value)


def table_csv(rows_: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows_ for k in r))
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows_:
        writer.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def _stats(ys: list[float]) -> tuple[float, float]:
    import numpy as np

    return float(np.mean(ys)), float(np.std(ys, ddof=1)) if len(ys) > 1 else 0.0


def figure(sweep: Sweep, rows_: list[dict]):
    """The metric against plot.x, one line per plot.lines value: mean with a +-1 sd bar over the other
    swept keys (seeds), each point as a dot; points with x null drawn as a dashed reference band."""
    from matplotlib.figure import Figure  # no pyplot: headless

    x_key, y_key, line_key = sweep.plot["x"], sweep.plot["y"], sweep.plot["lines"]
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.subplots()
    ref = [r[y_key] for r in rows_ if r.get(x_key) is None]
    if ref:
        mean, sd = _stats(ref)
        ax.axhline(mean, color="0.3", ls="--", lw=1, label=f"{x_key} null (n={len(ref)}): {mean:.4f} ± {sd:.4f}")
        ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.15, lw=0)
    groups = list(dict.fromkeys(r.get(line_key) for r in rows_ if r.get(x_key) is not None)) if line_key else [None]
    for i, group in enumerate(groups):
        mine = [r for r in rows_ if r.get(x_key) is not None and (line_key is None or r.get(line_key) == group)]
        xs = sorted({r[x_key] for r in mine})
        stats = [_stats([r[y_key] for r in mine if r[x_key] == x]) for x in xs]
        colour = f"C{i}"
        label = f"{line_key} = {_value_text(group)}" if line_key else y_key
        if line_key and group is None:  # points of another grid, without the key: name what they share
            shared = [k for k in sweep.keys if k != x_key and len({_value_text(r.get(k)) for r in mine}) == 1
                      and all(k in r for r in mine)]
            label = ", ".join(f"{k} = {_value_text(mine[0][k])}" for k in shared) or f"{line_key} not swept"
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], color=colour, marker="o", capsize=3,
                    label=label)
        ax.scatter([r[x_key] for r in mine], [r[y_key] for r in mine], color=colour, s=10, alpha=0.4)
    if sweep.plot["log_x"]:
        ax.set_xscale("log", base=2)
    xs_all = sorted({r[x_key] for r in rows_ if r.get(x_key) is not None})
    if xs_all and all(isinstance(x, (int, float)) for x in xs_all):
        ax.set_xticks(xs_all, [_value_text(x) for x in xs_all])
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    n_seeds = len(rows_) // max(1, len({(r.get(x_key), r.get(line_key)) for r in rows_}))
    ax.set_title(f"sweep {sweep.name}: {y_key} against {x_key}\nmean ± 1 sd of {n_seeds} runs per point, "
                 "each run a dot", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write(sweep: Sweep, runs: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write out_dir/sweep.csv and out_dir/sweep.png (atomically) from the points' probe metrics."""
    rows_ = rows(sweep, runs)
    csv_path, png_path = out_dir / "sweep.csv", out_dir / "sweep.png"
    fig = figure(sweep, rows_)
    with io.atomic_path(png_path, suffix=".png") as tmp:  # the title also travels in the PNG (tEXt chunk)
        fig.savefig(tmp, format="png", metadata={"Title": f"sweep {sweep.name}: {sweep.plot['y']} "
                                                          f"against {sweep.plot['x']}"})
    io.write_text(csv_path, table_csv(rows_))
    return csv_path, png_path


# --- the same grid as DVC experiments -------------------------------------------------------------

def _set_value(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if not isinstance(value, str) else value


def dvc_commands(sweep: Sweep) -> list[str]:
    """One `dvc exp run --queue` line per grid of the sweep (DVC expands comma-separated values into
    their product), with the base preset's and `set`'s keys; single-quoted for the shell (`| sh`)."""
    fixed = _flat(config.load_preset(sweep.base)) if sweep.base else {}
    fixed.update(sweep.fixed)
    out = []
    for grid in sweep.grids:
        words = ["dvc", "exp", "run", "--queue"]
        for key, value in fixed.items():  # the base's and set's keys, each once; the grid's own win
            if key not in grid:
                words += ["-S", f"'{key}={_set_value(value)}'"]
        for key, values in grid.items():
            words += ["-S", f"'{key}={','.join(_set_value(v) for v in values)}'"]
        out.append(" ".join(words))
    return out
