"""The `simclr` command: one subcommand per pipeline stage, the same names as the Snakemake rules and DVC stages.

    simclr prepare  --out data/digits
    simclr validate data/digits --manifest data/manifest.json
    simclr pretrain --manifest data/manifest.json --model models/simclr.pt --live-dir metrics/pretrain
    simclr extract  --manifest data/manifest.json --model models/simclr.pt --out-dir features
    simclr probe    --features-dir features --metrics metrics/probe.json --plots-dir metrics/plots

Params come from params.yaml (--params), or as JSON from Snakemake (--config), which passes the
keys the stage reads from its own, possibly overridden, config.

With train.gpus > 1, `simclr pretrain` started outside torchrun starts itself again under
`torchrun --standalone --nproc_per_node <gpus>` (one node); for several nodes call torchrun yourself.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import config


def _log(msg: str) -> None:
    print(msg, flush=True)


def _params(args, stage: str) -> dict:
    if args.config is not None:
        return config.from_json(args.config, stage)
    return config.load_params(args.params)


def cmd_prepare(args) -> int:
    from .prepare import prepare

    params = _params(args, "prepare")
    out = prepare(params, Path(args.out))
    _log(f"prepare: {params['data']['source']} -> {out}")
    return 0


def cmd_validate(args) -> int:
    from .validate import validate

    params = _params(args, "validate")
    cfg = params["validate"]
    report = validate(args.root, args.manifest, cfg["imbalance_ratio"], cfg["workers"])
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    if report.errors:
        print(f"validate: {len(report.errors)} error(s); no manifest written", file=sys.stderr)
        return 1
    splits = report.manifest["splits"]
    _log(f"validate: {len(report.manifest['classes'])} classes, train {splits['train']['images']}, "
         f"test {splits['test']['images']} images, {len(report.warnings)} warning(s) -> {args.manifest}")
    return 0


def torchrun_command(gpus: int, argv: list[str]) -> list[str]:
    """The same `simclr` command line, run by torchrun on one node with `gpus` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "simclr", *argv]


def cmd_pretrain(args) -> int:
    from .pretrain import Interrupted, pretrain, share_of

    params = _params(args, "pretrain")
    gpus = params["train"]["gpus"]
    if gpus > 1 and "LOCAL_RANK" not in os.environ:
        share_of(params["train"]["batch_size"], gpus)  # fail here, before starting the processes
        cmd = torchrun_command(gpus, args.argv)
        _log(f"pretrain: train.gpus is {gpus}; running {' '.join(cmd[1:5])} ...")
        sys.stdout.flush()
        os.execv(cmd[0], cmd)
    try:
        pretrain(params, Path(args.manifest), Path(args.model), Path(args.live_dir),
                 checkpoint_dir=Path(args.checkpoint_dir), log=_log)
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    return 0


def cmd_extract(args) -> int:
    from .extract import extract

    extract(_params(args, "extract"), Path(args.manifest), Path(args.model), Path(args.out_dir), log=_log)
    return 0


def cmd_probe(args) -> int:
    from .probe import probe

    probe(_params(args, "probe"), Path(args.features_dir), Path(args.metrics), Path(args.plots_dir), log=_log)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simclr", description="SimCLR pipeline stages (see README.md)")
    sub = p.add_subparsers(dest="stage", required=True)

    def stage(name, func, help):
        s = sub.add_parser(name, help=help)
        s.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        s.add_argument("--config", default=None, help="the stage's params as JSON (used by Snakemake)")
        s.set_defaults(func=func)
        return s

    s = stage("prepare", cmd_prepare, "materialise the dataset chosen by data.source")
    s.add_argument("--out", required=True, help="folder to write the layout to (data/<source>)")
    s = stage("validate", cmd_validate, "check a dataset layout and write its manifest")
    s.add_argument("root", help="dataset root (class.txt, train/, test/)")
    s.add_argument("--manifest", required=True, help="where to write the manifest JSON")
    s = stage("pretrain", cmd_pretrain, "SimCLR pretraining on the train split")
    s.add_argument("--manifest", required=True)
    s.add_argument("--model", required=True, help="output checkpoint (models/simclr.pt)")
    s.add_argument("--live-dir", required=True,
                   help="DVCLive folder: metrics.json and per-epoch plots/metrics/*.tsv (metrics/pretrain)")
    s.add_argument("--checkpoint-dir", default="checkpoints/pretrain",
                   help="resumable checkpoints, outside the declared outputs so that no orchestrator deletes them")
    s = stage("extract", cmd_extract, "frozen features of the pretrained and the random-init encoder")
    s.add_argument("--manifest", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--out-dir", required=True, help="folder for simclr.npz and random.npz")
    s = stage("probe", cmd_probe, "linear, label-scarce and kNN evaluation")
    s.add_argument("--features-dir", required=True)
    s.add_argument("--metrics", required=True, help="output metrics JSON")
    s.add_argument("--plots-dir", required=True, help="output folder for the plot CSVs")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    from .data import LayoutError

    try:
        return args.func(args)
    except (config.ParamsError, LayoutError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
    except (FileNotFoundError, IsADirectoryError) as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
    except (ValueError, RuntimeError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
