"""The `simclr` command: one subcommand per pipeline stage, the same names as the Snakemake rules and DVC stages.

    simclr prepare  --out data/digits
    simclr validate data/digits --manifest data/manifest.json
    simclr pretrain --manifest data/manifest.json --model models/simclr.pt --live-dir metrics/pretrain
    simclr extract  --manifest data/manifest.json --model models/simclr.pt --out-dir features
    simclr probe    --features-dir features --metrics metrics/probe.json --plots-dir metrics/plots

and helpers that are not stages: `simclr classes ROOT` writes class.txt for a tree without one,
`simclr preset configs/<name>.yaml` prints a preset as `dvc exp run` options, and `simclr sweep
sweeps/<name>.yaml` checks a sweep and writes its table and plot (Snakemake runs its points).

Params come from params.yaml (--params), or as JSON from Snakemake (--config, the keys the stage
tracks, and --runtime). A stage is handed only the keys it tracks (config.given).

With runtime.gpus > 1, `simclr pretrain` started outside torchrun starts itself again under
`torchrun --standalone --nproc_per_node <gpus>` (one node); for several nodes call torchrun yourself.

Errors a user can fix (errors.UserError: bad params, a bad layout, a missing or unreadable file)
print one `error:` line each and exit 1; anything else keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__, config
from .errors import UserError


def _log(msg: str) -> None:
    print(msg, flush=True)


def _params(args, stage: str) -> dict:
    if args.config is not None:
        return config.from_json(args.config, stage, args.runtime)
    return config.given(config.load_params(args.params), stage)


def cmd_prepare(args) -> int:
    from .prepare import prepare

    params = _params(args, "prepare")
    out = prepare(params, Path(args.out))
    _log(f"prepare: {params['data']['source']} -> {out}")
    return 0


def cmd_validate(args) -> int:
    from .validate import validate

    cfg = _params(args, "validate")["validate"]
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


def cmd_pretrain(args) -> int:
    from .pretrain import Interrupted, pretrain, torchrun_command

    params = _params(args, "pretrain")
    cmd = torchrun_command(params["runtime"]["gpus"], args.argv)
    if cmd:  # runtime.gpus > 1 outside torchrun: become torchrun, which runs this command once per GPU
        _log(f"pretrain: runtime.gpus is {params['runtime']['gpus']}; running {' '.join(cmd[1:5])} ...")
        sys.stdout.flush()
        os.execv(cmd[0], cmd)
    try:
        pretrain(params, Path(args.manifest), Path(args.model), Path(args.live_dir),
                 checkpoint_dir=args.checkpoint_dir and Path(args.checkpoint_dir), log=_log)
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


def cmd_classes(args) -> int:
    from .validate import write_classes

    names = write_classes(Path(args.root))
    _log(f"classes: wrote {Path(args.root) / 'class.txt'}: {len(names)} classes ({', '.join(names[:10])}"
         f"{', ...' if len(names) > 10 else ''})")
    return 0


def cmd_preset(args) -> int:
    """Print the preset as `dvc exp run` set-params options, after checking it over params.yaml."""
    config.load_params(args.params, args.preset)  # a preset that does not validate stops here
    print(" ".join(config.set_params_args(config.load_preset(args.preset))))
    return 0


def cmd_exps(args) -> int:
    """DVC's experiments as one table that fits a terminal."""
    from .exps import show

    print(show(args.width))
    return 0


def cmd_sweep(args) -> int:
    """Check a sweep file; write its table and plot from the points' metrics, or print its DVC queue."""
    from . import sweep as sweeps

    if args.config:  # the workflow's config, from Snakemake
        params = config.validate_params(config.parse_json(args.config, "--config"), "--config")
    else:  # params.yaml with the sweep's base laid over it (as `snakemake --configfile <base>` and dvc -S do)
        base = sweeps.base_of(args.sweep)
        params = config.load_params(args.params, *([base] if base else []))
    sw = sweeps.load(args.sweep, params)
    if args.dvc:
        print("\n".join(sweeps.dvc_commands(sw)))
        return 0
    if not args.runs or not args.out_dir:
        _log(f"sweep: {args.sweep}: {len(sw.points)} points, valid (give --runs and --out-dir to write its table)")
        return 0
    csv_path, png_path = sweeps.write(sw, Path(args.runs), Path(args.out_dir))
    _log(f"sweep: {len(sw.points)} points -> {csv_path}, {png_path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simclr", description="SimCLR pipeline stages (see README.md)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name, func, help, reads_writes, runtime=False):
        s = sub.add_parser(name, help=help, description=f"{help}. {reads_writes}")
        s.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        s.add_argument("--config", default=None, help="the stage's tracked params as JSON (used by Snakemake)")
        if runtime:
            s.add_argument("--runtime", default=None,
                           help="the runtime section as JSON, with --config (used by Snakemake; default: the schema's)")
        s.set_defaults(func=func, runtime=None)
        return s

    s = stage("prepare", cmd_prepare, "materialise the dataset chosen by data.source",
              "Reads params `data`; writes the layout (class.txt, train/, test/) to --out.")
    s.add_argument("--out", required=True, help="folder to write the layout to (data/<source>)")
    s = stage("validate", cmd_validate, "check a dataset layout and write its manifest",
              "Reads params `validate` and every image under ROOT; writes --manifest (class list, "
              "per-split counts, the dataset's content hash).")
    s.add_argument("root", help="dataset root (class.txt, train/, test/)")
    s.add_argument("--manifest", required=True, help="where to write the manifest JSON (data/manifest.json)")
    s = stage("pretrain", cmd_pretrain, "SimCLR pretraining on the train split",
              "Reads params `model`, `augment`, `train`, `optim`, `runtime`, the manifest and the images it lists; "
              "writes --model, the per-epoch log in --live-dir and resumable checkpoints in --checkpoint-dir.",
              runtime=True)
    s.add_argument("--manifest", required=True, help="the dataset manifest from validate (data/manifest.json)")
    s.add_argument("--model", required=True, help="output model file (models/simclr.pt)")
    s.add_argument("--live-dir", required=True,
                   help="DVCLive folder: metrics.json and per-epoch plots/metrics/*.tsv (metrics/pretrain)")
    s.add_argument("--checkpoint-dir", default=None,
                   help="resumable checkpoints, outside the declared outputs so that no orchestrator deletes them "
                        "(default: <cache>/checkpoints/<fingerprint>, the cache being $SIMCLR_CACHE, else "
                        "$XDG_CACHE_HOME/simclr, else ~/.cache/simclr)")
    s = stage("extract", cmd_extract, "frozen features of the pretrained and the random-init encoder",
              "Reads params `extract`, `runtime`, the manifest, its images and --model; writes "
              "simclr.npz and random.npz (train/test features and labels) to --out-dir.", runtime=True)
    s.add_argument("--manifest", required=True, help="the dataset manifest from validate (data/manifest.json)")
    s.add_argument("--model", required=True, help="the model file from pretrain (models/simclr.pt)")
    s.add_argument("--out-dir", required=True, help="folder for simclr.npz and random.npz (features)")
    s = stage("probe", cmd_probe, "linear, label-scarce and kNN evaluation",
              "Reads params `probe` and --features-dir/{simclr,random}.npz; writes --metrics and "
              "per_class.csv, confusion.csv, embedding.png to --plots-dir.")
    s.add_argument("--features-dir", required=True, help="folder holding simclr.npz and random.npz (features)")
    s.add_argument("--metrics", required=True, help="output metrics JSON (metrics/probe.json)")
    s.add_argument("--plots-dir", required=True, help="output folder for the plot files (metrics/plots)")
    s = sub.add_parser("classes", help="write class.txt for a train/<class>/, test/<class>/ tree",
                       description="Writes ROOT/class.txt from the class folder names of ROOT/train and ROOT/test "
                                   "(sorted, indexed from 0), atomically; refuses when class.txt exists or the "
                                   "splits' class folders differ. Reads only folder names.")
    s.add_argument("root", help="dataset root holding train/ and test/")
    s.set_defaults(func=cmd_classes)
    s = sub.add_parser("exps", help="dvc exp show, narrow: headline metrics and the params each experiment changed",
                       description="Reads `dvc exp show --json` and prints one row per commit and experiment: "
                                   "SimCLR's linear, kNN k=10, kNN k=200 and few-shot top-1 (%), pretrain's last "
                                   "loss, and the params keys that differ from the baseline. Writes nothing.")
    s.add_argument("--width", type=int, default=120, help="cut lines at this many characters (default 120)")
    s.set_defaults(func=cmd_exps)
    s = sub.add_parser("preset", help="a preset's keys as `dvc exp run -S` options",
                       description="Checks that PRESET laid over --params validates, then prints its keys as "
                                   "`-S section.key=value` words: dvc exp run $(simclr preset PRESET). "
                                   "Writes nothing (Snakemake takes a preset as --configfile PRESET).")
    s.add_argument("preset", help="a preset file (configs/*.yaml): only the keys it changes")
    s.add_argument("--params", default="params.yaml", help="params file it is laid over (default: params.yaml)")
    s.set_defaults(func=cmd_preset)
    s = sub.add_parser("sweep", help="check a sweep file; write its table and plot, or print its DVC queue",
                       description="Checks SWEEP (sweeps/<name>.yaml: base, grid, plot) against the params before "
                                   "any run. With --runs and --out-dir, writes <out-dir>/sweep.csv (one row per "
                                   "point: swept values and probe metrics) and <out-dir>/sweep.png from "
                                   "<runs>/<point>/metrics/probe.json (what `snakemake sweep_<name>` runs); with "
                                   "--dvc, prints the same grid as `dvc exp run --queue` commands.")
    s.add_argument("sweep", help="a sweep file (sweeps/<name>.yaml)")
    s.add_argument("--params", default="params.yaml", help="the workflow's params (default: params.yaml)")
    s.add_argument("--config", default=None, help="the workflow's whole config as JSON (used by Snakemake)")
    s.add_argument("--runs", default=None, help="folder holding one folder per point (results/sweeps/<name>)")
    s.add_argument("--out-dir", default=None, help="folder for sweep.csv and sweep.png (sweeps/<name>)")
    s.add_argument("--dvc", action="store_true", help="print the grid as `dvc exp run --queue` commands")
    s.set_defaults(func=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except UserError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:  # a path given on the command line
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
