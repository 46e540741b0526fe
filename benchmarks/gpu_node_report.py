"""The offline GPU node's one table (benchmarks/gpu_node.py run): results.json and results.md in
--out, rewritten after every part, so a run cut short still reports what it did."""
from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path


class Report:
    """results.json and results.md in `out`, rewritten (atomically) after every part of the run."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict = {"times_s": {}, "checks": {}}

    def save(self) -> None:
        for name, text in (("results.json", json.dumps(self.data, indent=1)), ("results.md", self.table())):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    def table(self) -> str:
        d, rows = self.data, []
        env = d.get("env", {})
        rows.append(("machine", f"{env.get('gpu', 'CPU')}, torch {env.get('torch', '?')}, "
                                f"Python {env.get('python', '?')}, {env.get('cpus', '?')} CPU cores"))
        if "recipe" in d:
            rows.append(("recipe", d["recipe"]))
        times = d["times_s"]
        for name, s in times.items():
            rows.append((f"time: {name}", f"{s:.1f} s"))
        rows.append(("time: total (wall)", f"{sum(times.values()):.1f} s"))
        pre = d.get("pretrain")
        if pre:
            rows.append(("epochs run / planned", f"{pre['epochs_done']} / {pre['epochs_planned']}"
                                                 + (" (stopped at the budget)" if pre.get("cut_short") else "")))
            if pre["epoch_time_s"]:
                et = pre["epoch_time_s"]
                rest = et[1:] or et
                rows.append(("epoch time (first, with compile / median of the rest)",
                             f"{et[0]:.2f} s / {statistics.median(rest):.2f} s"))
                rows.append(("views/s (median epoch)", f"{statistics.median(pre['views_per_s'][1:] or pre['views_per_s']):,.0f}"))
                rows.append(("peak GPU memory (pretrain)", f"{max(pre['gpu_peak_mib']):,.0f} MiB"
                             if max(pre["gpu_peak_mib"]) else "n/a (CPU)"))
            if pre["knn"]:
                rows.append(("kNN monitor (epoch: top-1)", ", ".join(f"{e}: {100 * v:.1f}%" for e, v in pre["knn"])))
        probe = d.get("probe")
        if probe:
            s, r = probe["simclr"], probe["random"]
            shots = d.get("shots", 5)
            rows.append(("linear top-1 (SimCLR / random-init)", f"{100 * s['linear_top1']:.2f}% / {100 * r['linear_top1']:.2f}%"))
            rows.append((f"kNN top-1, k={d.get('vote_k', 10)} majority vote, cosine (the anchor's; SimCLR / random-init)",
                         f"{100 * s['knn_vote_top1']:.2f}% / {100 * r['knn_vote_top1']:.2f}%"))
            rows.append((f"kNN top-1, k={d.get('knn_k', 200)} weighted, t=0.1 (SimCLR / random-init)",
                         f"{100 * s['knn_top1']:.2f}% / {100 * r['knn_top1']:.2f}%"))
            rows.append((f"{shots}-shot top-1 (SimCLR / random-init)",
                         f"{100 * s['fewshot_top1']:.2f}% / {100 * r['fewshot_top1']:.2f}%"))
        prof = d.get("profile")
        if prof:
            shares = ", ".join(f"{k} {100 * v / prof['wall_s']:.0f}%" for k, v in prof["parts_s"].items())
            rows.append((f"one epoch ({prof['steps']} steps), where the time goes (profile/profile.md)", shares))
        c = d["checks"]
        if "augment" in c:
            a = c["augment"]
            rows.append((f"augmented views/s: batched on {a['device']} vs per-image DataLoader ({a['workers']} workers)",
                         f"{a['batched_views_per_s']:,.0f} vs {a['reference_views_per_s']:,.0f} ({a['ratio']:.1f}x)"))
        if "step" in c:
            a = c["step"]
            rows.append((f"full step vs model-only fwd/bwd (batch {a['batch']}, {a['precision']}, eager)",
                         f"{a['full_step_views_per_s']:,.0f} vs {a['model_only_views_per_s']:,.0f} views/s "
                         f"({a['ratio']:.2f})"))
        if "exact" in c:
            a = c["exact"]
            rows.append((f"exact, batch {a['batch']} in chunks of {a['chunk']} vs {a['batch']} at once",
                         f"peak {a['exact']['peak_mib']:,.0f} vs {a['direct']['peak_mib']:,.0f} MiB "
                         f"({a['memory_ratio']:.2f}x), step {1000 * a['exact']['seconds']:.0f} vs "
                         f"{1000 * a['direct']['seconds']:.0f} ms ({a['time_ratio']:.2f}x)"))
        if "sync" in c:
            a = c["sync"]
            verdict = {True: "no host sync (passed)", False: f"FAILED: {a.get('error')}", None: a.get("note")}
            rows.append(("one train_step under set_sync_debug_mode('error')", verdict[a.get("sync_free")]))
        for name, problem in d.get("failed", {}).items():
            rows.append((f"FAILED: {name}", problem))
        lines = ["| what | measured |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines) + "\n"


def tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def live_series(live: Path, name: str) -> list[tuple[int, float]]:
    path = live / "plots" / "metrics" / f"{name}.tsv"
    if not path.exists():
        return []
    return [(int(r["step"]), float(r[name])) for r in csv.DictReader(path.open(), delimiter="\t")]
