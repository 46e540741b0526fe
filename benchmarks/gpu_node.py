"""Driver of benchmarks/gpu_node.sh: an offline GPU node, one command, one results table.

    python benchmarks/gpu_node.py install --wheels DIR --site DIR    # what the node lacks, from DIR alone
    python benchmarks/gpu_node.py check                              # installed versions vs pyproject.toml
    python benchmarks/gpu_node.py run --data ROOT --out DIR [--budget S] [--smoke] [--started T]
    python benchmarks/gpu_node.py sync-check --manifest M --params P # one train_step under sync debug "error"

`run` takes the real dataset through the pipeline's own stages (validate, pretrain, extract, probe,
each a `python -m simclr` subprocess, timed) plus short GPU checks, all inside a wall-clock budget
counted from --started (the shell wrapper's start, so set-up counts too):

- the epochs of the preset that fit: estimated from the measured full-step throughput, capped at the
  preset's train.epochs; pretrain is stopped with SIGTERM (it checkpoints) if it still runs late;
- results.json and results.md are rewritten in --out after every part, and pretrain logs each
  epoch (and the kNN monitor) as it ends, so a run cut short still reports what it did.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from gpu_node_env import cmd_check, cmd_install
from gpu_node_report import Report, live_series, tail

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
PRESET = ROOT / "configs" / "cifar10-resnet18-short.yaml"

# Smoke mode (a CPU, a few minutes): the same parts at toy sizes.
SMOKE = {
    "limit_per_class": 12,
    "params": {"train": {"epochs": 2, "batch_size": 32, "compile": False, "precision": "fp32", "knn_every": 1},
               "runtime": {"device": "cpu", "checkpoint_every": 1},
               "model": {"input_size": 16, "width": 8}, "extract": {"precision": "fp32"},
               "probe": {"c_num": 2, "knn_k": 20, "shots": 2, "shot_draws": 2, "embedding": "pca",
                         "embedding_samples": 100}},
    "checks": {"device": "cpu", "batch": 16, "workers": 2, "steps": 1, "exact": (16, 4)},
}
FULL_CHECKS = {"device": "cuda", "batch": 512, "workers": os.cpu_count() or 1, "steps": 20, "exact": (1024, 256)}
# Seconds kept back for what follows pretraining: extract (11 s on the H200 node) and probe (two
# encoders, every fit side by side; about two minutes on CIFAR-10, see README).
AFTER_PRETRAIN_S = 150
COMPILE_S = 45  # first-epoch allowance for torch.compile (28 s measured on the H200 node for the model)




# ---------------------------------------------------------------- sync check
def cmd_sync_check(args) -> int:
    """Warm-up steps, then one more training step with CUDA's sync debug mode set to "error": any
    device-to-host transfer in it (an .item(), a nonzero(), a data-dependent shape) raises."""
    import torch

    from simclr import config, model as model_lib, optim as optim_lib
    from simclr.cache import load_split
    from simclr.pretrain import train_step, view_maker

    params = config.load_params(args.params)
    params["train"]["compile"] = args.compile  # eager by default: seconds, not a compile
    train = params["train"]
    device = torch.device("cuda" if torch.cuda.is_available() and params["runtime"]["device"] != "cpu" else "cpu")
    size = params["model"]["input_size"]
    images = load_split(json.loads(Path(args.manifest).read_text()), "train", size)[0][:train["batch_size"] * 4]
    images = images.to(device)
    net = model_lib.build(params, train["seed"]).to(device)
    if train["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    step_net = torch.compile(net) if args.compile else net
    opt = optim_lib.build(net, params["optim"], train["batch_size"])
    gen = torch.Generator(device=device).manual_seed(0)
    views = view_maker(params, gen)
    batch = min(train["batch_size"], len(images))
    chunk = train["chunk_size"] or batch

    def step(i):
        idx = torch.randint(0, len(images), (batch,), generator=gen, device=device)
        return train_step(step_net, opt, images[idx], 0.01, train, chunk, views)

    for i in range(3):
        step(i)
    if device.type != "cuda":
        print(json.dumps({"sync_free": None, "note": "CPU: CUDA's sync debug mode does not apply"}))
        return 0
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step(3)
        error = None
    except RuntimeError as exc:  # name the line that synchronised
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "simclr" in f.filename]
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].line})" if frames else ""
        error = str(exc).splitlines()[0] + where
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    out = {"sync_free": error is None, "error": error}
    if error is None:
        out["loss"] = float(loss)
    print(json.dumps(out))
    return 0 if error is None else 1


# ---------------------------------------------------------------- run
def subset(src: Path, dest: Path, per_class: int) -> Path:
    """The first per_class images of each class and split of src, copied into dest."""
    from simclr.data import SPLITS, is_litter, read_classes

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy(src / "class.txt", dest / "class.txt")
    for split in SPLITS:
        for name in read_classes(src):
            (dest / split / name).mkdir(parents=True)
            files = sorted(p for p in (src / split / name).iterdir() if not is_litter(p.name))[:per_class]
            for p in files:
                shutil.copy(p, dest / split / name / p.name)
    return dest


def run_part(report: Report, name: str, cmd: list[str], log: Path, timeout: float | None = None) -> bool:
    """Run one part as a subprocess (output to log and this terminal), time it, record a failure."""
    start = time.perf_counter()
    print(f"== {name}: {' '.join(cmd[1:6])} ...", flush=True)
    with log.open("a") as f:
        f.write(f"\n== {name}: {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        out = []
        deadline = None if timeout is None else time.monotonic() + timeout
        stopped = False
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 and not stopped:
                print(f"== {name}: budget reached, sending SIGTERM", flush=True)
                os.killpg(proc.pid, signal.SIGTERM)
                stopped, deadline = True, time.monotonic() + 60  # it checkpoints at the next step
            elif left is not None and left <= 0:
                os.killpg(proc.pid, signal.SIGKILL)
                deadline = None
            if sel.select(timeout=1 if deadline is not None else None):
                line = proc.stdout.readline()
                if not line:
                    break
                out.append(line)
                f.write(line)
                f.flush()
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    report.data["times_s"][name] = round(time.perf_counter() - start, 1)
    if rc != 0:
        report.data.setdefault("failed", {})[name] = (f"exit {rc}" + (" (stopped at the budget)" if stopped else "")
                                                     + ": " + tail("".join(out), 3).replace("\n", " / ")[-300:])
    report.save()
    return rc == 0


def environment(device: str) -> dict:
    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()}
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return env


def cmd_run(args) -> int:
    import yaml

    started = args.started or time.time()
    deadline = started + args.budget
    out, work = Path(args.out), Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["SIMCLR_CACHE"] = str(work / "cache")
    report = Report(out)
    if args.setup_s:
        report.data["times_s"]["setup (install, unpack data)"] = args.setup_s
    log = out / "log.txt"
    log.write_text("")
    py = sys.executable
    smoke = args.smoke
    checks = SMOKE["checks"] if smoke else FULL_CHECKS

    from simclr.config import merge

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = merge(params, yaml.safe_load(args.preset.read_text()))
    data_root = Path(args.data)
    if smoke:
        data_root = subset(data_root, work / "subset", SMOKE["limit_per_class"])
        params = merge(params, SMOKE["params"])
    params["data"].update(source="folder", folder=str(data_root))
    p = work / "params.yaml"
    p.write_text(yaml.safe_dump(params, sort_keys=False))
    train = params["train"]
    report.data["env"] = environment(checks["device"])
    report.data["shots"], report.data["knn_k"] = params["probe"]["shots"], params["probe"]["knn_k"]
    report.data["vote_k"] = params["probe"]["vote_k"]
    report.save()
    print(f"gpu_node: {report.data['env']}; budget {args.budget:.0f} s, "
          f"{deadline - time.time():.0f} s left", flush=True)

    manifest = work / "manifest.json"
    if not run_part(report, "validate", [py, "-m", "simclr", "validate", str(data_root), "--manifest", str(manifest),
                                         "--params", str(p)], log):
        return 1
    size = params["model"]["input_size"]
    run_part(report, "decode (cached for every stage)",
             [py, "-c", "import json, sys; from simclr.cache import load_split; m = json.load(open(sys.argv[1]));"
                        "[load_split(m, s, int(sys.argv[2])) for s in ('train', 'test')]", str(manifest), str(size)], log)

    # short checks, each in its own process, each optional
    def check(name, cmd, key):
        path = work / f"{key}.json"
        if run_part(report, f"check: {name}", [*cmd, "--json", str(path)], log,
                    timeout=max(10.0, deadline - time.time())) and path.exists():
            report.data["checks"][key] = json.loads(path.read_text())
            report.save()

    b = checks["batch"]
    prec = train["precision"]
    check("step overhead", [py, str(HERE / "step_overhead.py"), "--batch", str(b), "--device", checks["device"],
                            "--precision", prec, "--steps", str(checks["steps"]), "--size", str(size),
                            "--width", str(params["model"]["width"]),
                            *(["--channels-last"] if train["channels_last"] else [])], "step")
    ok = run_part(report, "check: sync-free step", [py, str(HERE / "gpu_node.py"), "sync-check", "--manifest",
                                                    str(manifest), "--params", str(p)], log)
    last = [line for line in log.read_text().splitlines() if line.startswith('{"sync_free"')]
    if last:
        report.data["checks"]["sync"] = json.loads(last[-1])
    elif not ok:
        report.data["checks"]["sync"] = {"sync_free": False, "error": "the check itself failed (see log)"}
    report.save()

    check("augmentation throughput", [py, str(HERE / "augment_throughput.py"), "--root", str(data_root),
                                      "--manifest", str(manifest), "--device", checks["device"], "--batch", str(b),
                                      "--passes", "1", "--workers", str(checks["workers"]), "--size", str(size)],
          "augment")
    eb, ec = checks["exact"]
    check("exact vs direct", [py, str(HERE / "gradcache_memory.py"), "--batch", str(eb), "--chunk", str(ec),
                              "--device", checks["device"], "--precision", prec, "--size", str(size),
                              "--width", str(params["model"]["width"]),
                              *(["--channels-last"] if train["channels_last"] else [])], "exact")

    # pretrain: as many of the preset's epochs as the budget holds
    n_train = json.loads(manifest.read_text())["splits"]["train"]["images"]
    per_epoch_views = 2 * (n_train // min(train["batch_size"], n_train)) * min(train["batch_size"], n_train)
    speed = report.data["checks"].get("step", {}).get("full_step_views_per_s")
    est = per_epoch_views / speed if speed else None
    left = deadline - time.time() - AFTER_PRETRAIN_S - (COMPILE_S if train["compile"] else 0)
    planned = train["epochs"] if smoke or est is None else max(1, min(train["epochs"], int(left / (est * 1.1))))
    train["epochs"] = planned
    p.write_text(yaml.safe_dump(params, sort_keys=False))
    opt = params["optim"]
    report.data["recipe"] = (f"{args.preset.name}: {params['model']['arch']}, batch {train['batch_size']}, "
                             f"{planned} epochs planned ({'est. %.1f s/epoch' % est if est else 'no estimate'}), "
                             f"{opt['name']} lr {opt['base_lr']} x batch/256, wd {opt['weight_decay']}, "
                             f"temperature {train['temperature']}, {train['precision']}"
                             f"{' + channels_last' if train['channels_last'] else ''}"
                             f"{' + compile' if train['compile'] else ''}")
    report.save()
    live = work / "live"
    model = work / "simclr.pt"
    pre_ok = run_part(report, "pretrain", [py, "-m", "simclr", "pretrain", "--manifest", str(manifest), "--model",
                                           str(model), "--live-dir", str(live), "--checkpoint-dir",
                                           str(work / "checkpoints"), "--params", str(p)], log,
                      timeout=max(30.0, deadline - time.time() - AFTER_PRETRAIN_S))
    knn = live_series(live, "knn_top1")
    report.data["pretrain"] = {
        "epochs_planned": planned, "epochs_done": len(live_series(live, "loss")), "cut_short": not pre_ok,
        "epoch_time_s": [v for _, v in live_series(live, "epoch_time_s")],
        "views_per_s": [v for _, v in live_series(live, "views_per_s")],
        "gpu_peak_mib": [v for _, v in live_series(live, "gpu_peak_mib")],
        "loss": [v for _, v in live_series(live, "loss")], "knn": knn}
    report.save()
    if pre_ok and model.exists():
        feats = work / "features"
        if run_part(report, "extract", [py, "-m", "simclr", "extract", "--manifest", str(manifest), "--model",
                                        str(model), "--out-dir", str(feats), "--params", str(p)], log):
            metrics = work / "probe.json"
            if run_part(report, "probe", [py, "-m", "simclr", "probe", "--features-dir", str(feats), "--metrics",
                                          str(metrics), "--plots-dir", str(work / "plots"), "--params", str(p)], log):
                report.data["probe"] = json.loads(metrics.read_text())
                shutil.copy(work / "plots" / "embedding.png", out / "embedding.png")
    # after the table is complete, if time is left: where one epoch's time goes (torch.profiler too)
    if time.time() < deadline - 30:
        prof = out / "profile"
        if run_part(report, "profile (one epoch)", [py, str(HERE / "profile_epoch.py"), "--manifest", str(manifest),
                                                   "--params", str(p), "--out", str(prof),
                                                   *(["--steps", "2", "--profiled", "1"] if smoke else [])],
                    log, timeout=max(10.0, deadline - time.time() - 5)) and (prof / "profile.json").exists():
            report.data["profile"] = json.loads((prof / "profile.json").read_text())
    report.data["wall_s"] = round(time.time() - started, 1)
    report.save()
    print("\n" + report.table(), flush=True)
    print(f"gpu_node: wall time {report.data['wall_s']:.0f} s (budget {args.budget:.0f} s); "
          f"results in {out}/results.md and results.json", flush=True)
    return 0 if not report.data.get("failed") else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("install", help="pip-install the carried wheels the environment lacks (no index)")
    s.add_argument("--wheels", required=True, help="folder of carried *.whl files")
    s.add_argument("--site", required=True, help="folder to install into (put it on PYTHONPATH)")
    sub.add_parser("check", help="installed versions against pyproject.toml's dependencies")
    s = sub.add_parser("run", help="the pipeline on real data plus the GPU checks, one table")
    s.add_argument("--data", required=True, help="dataset root in the layout (class.txt, train/, test/)")
    s.add_argument("--out", required=True, help="results.md, results.json, log.txt, embedding.png go here")
    s.add_argument("--work", default=str(ROOT / "runs" / "gpu_node"), help="scratch folder (emptied first)")
    s.add_argument("--preset", type=Path, default=PRESET, help="keys over params.yaml (default: the short recipe)")
    s.add_argument("--budget", type=float, default=540, help="wall-clock seconds for everything (default 540)")
    s.add_argument("--started", type=float, default=None, help="epoch seconds the budget counts from")
    s.add_argument("--setup-s", type=float, default=None, help="seconds the wrapper spent setting up")
    s.add_argument("--smoke", action="store_true", help="CPU smoke mode: a small subset, toy sizes")
    s = sub.add_parser("sync-check", help="one train_step under torch.cuda.set_sync_debug_mode('error')")
    s.add_argument("--manifest", required=True)
    s.add_argument("--params", required=True)
    s.add_argument("--compile", action="store_true", help="check the torch.compile'd step (adds the compile time)")
    args = ap.parse_args()
    return {"install": cmd_install, "check": cmd_check, "run": cmd_run, "sync-check": cmd_sync_check}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
