"""Validate and decode at scale, before and after the memory-mapped decode cache, in one run.

    python benchmarks/decode_scale.py --before REV [--work DIR] [--keep] [--only stl|224|pretrain]

Generates (once, in --work) two synthetic datasets in the layout, JPEGs of smooth random content:
  stl: STL-10's shape: 5,000 train + 8,000 test at 96 px in 10 classes and 100,000 unlabelled;
       plus a view of it ("stl-as-train") whose train/ holds the 100,000 unlabelled images (hard
       links) in class folders, so the code before the unlabelled split decodes the same 100,000;
  224: 10,000 train + 1,000 test photos at 500 x 375, decoded at 224.
Then each code version (REV from a git worktree, and this checkout) runs in its own process:
`validate`'s check, and one cold decode of a split into the cache (the code's own load_split). Every
process is timed and its peak resident memory sampled every 20 ms over it and its children (the
pool); RssAnon (process memory) and RssFile (mapped file pages, which the kernel may evict) are
reported apart. --only pretrain: pretrain's CPU throughput, resident vs streamed feed, alternating.
Writes benchmarks/results/decode_scale.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _smooth(rng, w: int, h: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)


def _write(task) -> None:
    folder, names, w, h, seed = task
    rng = np.random.default_rng(seed)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name in names:
        _smooth(rng, w, h).save(Path(folder) / name, quality=90)


def generate(root: Path, counts: dict, w: int, h: int) -> None:
    """counts: {split: n}; labelled splits spread over CLASSES, 'unlabelled' flat."""
    from concurrent.futures import ProcessPoolExecutor

    if (root / "class.txt").exists():
        return
    tasks, seed = [], 0
    for split, n in counts.items():
        folders = [root / split] if split == "unlabelled" else [root / split / c for c in CLASSES]
        per = n // len(folders)
        for folder in folders:
            for start in range(0, per, 2000):
                seed += 1
                tasks.append((str(folder), [f"{i:06d}.jpg" for i in range(start, min(per, start + 2000))], w, h, seed))
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write, tasks))
    (root / "class.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(CLASSES)))


def as_train(stl: Path, out: Path) -> None:
    """The unlabelled images as a train split (hard links): what the code before unlabelled/ can decode."""
    if (out / "class.txt").exists():
        return
    files = sorted((stl / "unlabelled").iterdir())
    for k, f in enumerate(files):
        folder = out / "train" / CLASSES[k % 10]
        folder.mkdir(parents=True, exist_ok=True)
        os.link(f, folder / f.name)
    for f in (stl / "test").rglob("*.jpg"):
        (out / "test" / f.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(f, out / "test" / f.parent.name / f.name)
    (out / "class.txt").write_text((stl / "class.txt").read_text())


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            for kid in kids:
                out += _tree(int(kid))
    except OSError:
        pass
    return out


def _rss(pid: int) -> tuple[int, int]:
    anon = file = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith("RssFile:"):
                file = int(line.split()[1])
    except OSError:
        pass
    return anon, file


def measured(cmd: list[str], env: dict) -> dict:
    """Run cmd; wall seconds and peak KiB of (main RssAnon, tree RssAnon, tree RssAnon + RssFile)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"main_anon": 0, "tree_anon": 0, "tree_total": 0}

    def sample():
        while proc.poll() is None:
            pids = _tree(proc.pid)
            rss = [_rss(p) for p in pids]
            peak["main_anon"] = max(peak["main_anon"], rss[0][0])
            peak["tree_anon"] = max(peak["tree_anon"], sum(a for a, _ in rss))
            peak["tree_total"] = max(peak["tree_total"], sum(a + f for a, f in rss))
            time.sleep(0.02)
    thread = threading.Thread(target=sample)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out}")
    return {"seconds": round(seconds, 2), **{k: round(v / 1024, 1) for k, v in peak.items()}, "out": out.strip()[-400:]}


VALIDATE = ("import json, sys; from simclr.validate import check; r = check(sys.argv[1]); "
            "assert not r.errors, r.errors[:3]; json.dump(r.manifest, open(sys.argv[2], 'w'))")
DECODE_BEFORE = ("import json, sys; from simclr.data import load_split; m = json.load(open(sys.argv[1])); "
                 "x = load_split(m, sys.argv[2], int(sys.argv[3]))[0]; print(tuple(x.shape))")
DECODE_AFTER = ("import json, sys; from simclr.cache import load_split; m = json.load(open(sys.argv[1])); "
                "x = load_split(m, sys.argv[2], int(sys.argv[3]), sys.argv[4] == 'crop')[0]; print(tuple(x.shape))")


def versions(before: Path) -> dict:
    return {"before": before / "src", "after": ROOT / "src"}


def run_case(rows, name, root, work, code, split, size, images, crop="squash"):
    import shutil

    for version, src in code.items():
        cache = work / f"cache-{version}-{name}"
        shutil.rmtree(cache, ignore_errors=True)  # every decode below is a cold one
        env = {**os.environ, "PYTHONPATH": str(src), "SIMCLR_CACHE": str(cache)}
        manifest = work / f"{name}-{version}.json"
        v = measured([sys.executable, "-c", VALIDATE, str(root), str(manifest)], env)
        rows.append({"dataset": name, "version": version, "step": "validate", "images": images["all"], **v})
        print(rows[-1], flush=True)
        if version == "before" and split == "unlabelled":
            continue
        script = DECODE_BEFORE if version == "before" else DECODE_AFTER
        d = measured([sys.executable, "-c", script, str(manifest), split, str(size), crop], env)
        rows.append({"dataset": name, "version": version, "step": f"decode {split} at {size}"
                     + (" (crop)" if crop == "crop" else ""), "images": images[split], **d})
        print(rows[-1], flush=True)
        if version == "after":  # a hit: the entry is mapped, not loaded
            h = measured([sys.executable, "-c", script, str(manifest), split, str(size), crop], env)
            rows.append({"dataset": name, "version": version, "step": f"cache hit {split}", "images": images[split], **h})


def table(rows) -> str:
    lines = ["| dataset | code | step | images | s | ms/image | peak RSS main (MiB) | peak RSS all processes (MiB) | + mapped file pages (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['version']} | {r['step']} | {r['images']:,} | {r['seconds']} | "
                     f"{1000 * r['seconds'] / r['images']:.3f} | {r['main_anon']:,.0f} | {r['tree_anon']:,.0f} | {r['tree_total']:,.0f} |")
    return "\n".join(lines)


def pretrain_throughput(work: Path, stl: Path, repeats: int) -> list[dict]:
    """pretrain on the 5,000 STL-shaped train images (stored 96, crops to 32, width 16), resident vs
    streamed, alternating; views/s of each run's epochs after the first."""
    import yaml

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base["model"].update({"input_size": 32, "stored_size": 96, "width": 16})
    base["train"].update({"epochs": 3, "batch_size": 256, "knn_every": 0, "splits": "train", "channels_last": True})
    base["optim"].update({"warmup_epochs": 0})
    base["runtime"].update({"device": "cpu", "checkpoint_every": 0, "resume": "never"})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SIMCLR_CACHE": str(work / "cache-after-stl")}
    manifest = work / "stl-after.json"
    if not manifest.exists():
        subprocess.run([sys.executable, "-c", VALIDATE, str(stl), str(manifest)], env=env, check=True)
    rows = []
    for rep in range(repeats):
        for feed, budget in (("resident", None), ("streamed", 0)):
            params = dict(base, runtime={**base["runtime"], "resident_mib": budget})
            pfile = work / f"pretrain-{feed}.yaml"
            pfile.write_text(yaml.safe_dump(params))
            out = work / f"pretrain-{feed}"
            r = measured([str(Path(sys.executable).parent / "simclr"), "pretrain", "--params", str(pfile),
                          "--manifest", str(manifest), "--model", str(out / "m.pt"), "--live-dir", str(out / "live"),
                          "--checkpoint-dir", str(out / f"ckpt{rep}")], env)
            per_epoch = [float(x.split("\t")[-1]) for x in
                         (out / "live" / "plots" / "metrics" / "views_per_s.tsv").read_text().splitlines()[1:]]
            rows.append({"feed": feed, "repeat": rep, "views_per_s_after_first": round(float(np.mean(per_epoch[1:])), 1),
                         "seconds": r["seconds"], "tree_anon": r["tree_anon"]})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="HEAD", help="git revision of the code before (a worktree is made)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "simclr-decode-scale")
    ap.add_argument("--only", choices=["stl", "224", "pretrain"], action="append")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["stl", "224", "pretrain"])
    before = work / "before-tree"
    if not before.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True)
    code = versions(before)
    stl, stl_train, big = work / "stl", work / "stl-as-train", work / "photos224"
    t0 = time.perf_counter()
    generate(stl, {"train": 5000, "test": 8000, "unlabelled": 100000}, 96, 96)
    as_train(stl, stl_train)
    generate(big, {"train": 10000, "test": 1000}, 500, 375)
    print(f"datasets ready in {time.perf_counter() - t0:.0f} s ({work})", flush=True)
    rows: list[dict] = []
    if "stl" in only:
        run_case(rows, "stl-shaped 96 px", stl, work, code, "unlabelled", 96,
                 {"all": 113000, "train": 5000, "unlabelled": 100000})
        run_case(rows, "stl as train 96 px", stl_train, work, code, "train", 96, {"all": 108000, "train": 100000})
    if "224" in only:
        run_case(rows, "photos 500x375", big, work, code, "train", 224, {"all": 11000, "train": 10000})
        import shutil
        shutil.rmtree(work / "cache-after-crop", ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SIMCLR_CACHE": str(work / "cache-after-crop")}
        d = measured([sys.executable, "-c", DECODE_AFTER, str(work / "photos 500x375-after.json"), "train", "224", "crop"], env)
        rows.append({"dataset": "photos 500x375", "version": "after", "step": "decode train at 224 (crop)",
                     "images": 10000, **d})
    result = {"machine": f"{os.cpu_count()} cores", "before": args.before, "rows": rows}
    if "pretrain" in only:
        result["pretrain"] = pretrain_throughput(work, stl, args.repeats)
    print(table(rows))
    for r in result.get("pretrain", []):
        print(f"pretrain {r['feed']:9s} repeat {r['repeat']}: {r['views_per_s_after_first']} views/s "
              f"(epochs 2-3), {r['seconds']} s, peak RSS {r['tree_anon']:,.0f} MiB")
    if result.get("pretrain"):
        for feed in ("resident", "streamed"):
            vals = [r["views_per_s_after_first"] for r in result["pretrain"] if r["feed"] == feed]
            result[f"{feed}_views_per_s"] = vals
        print("streamed / resident:", round(np.mean(result["streamed_views_per_s"]) / np.mean(result["resident_views_per_s"]), 3))
    out = ROOT / "benchmarks" / "results" / "decode_scale.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
