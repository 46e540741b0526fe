"""What the offline GPU node needs before anything runs (benchmarks/gpu_node.py install / check):
the carried wheels it lacks, installed with no index, and every runtime dependency of pyproject.toml
checked against what is installed, one error line per package."""
from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dist_name(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def cmd_install(args) -> int:
    wheels = sorted(Path(args.wheels).glob("*.whl"))
    if not wheels:
        sys.exit(f"error: {args.wheels}: expected the carried wheels (*.whl), found none; "
                 "run benchmarks/gpu_node_bundle.sh where an index is reachable")
    missing = [w for w in wheels if installed(dist_name(w)) is None]
    for w in wheels:
        if w not in missing:
            print(f"install: {dist_name(w)} {installed(dist_name(w))} already here; skipping {w.name}")
    if missing:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--quiet",
               "--disable-pip-version-check", "--target", args.site, *map(str, missing)]
        print("install: " + ", ".join(w.name for w in missing))
        if subprocess.run(cmd).returncode:
            sys.exit("error: pip install from the carried wheels failed (see above)")
    return 0


def requirements() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def cmd_check(args) -> int:
    """Every runtime dependency of the project is importable at a version pyproject.toml allows."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    problems = []
    for line in requirements():
        req = Requirement(line)
        have = installed(req.name)
        if have is None:
            problems.append(f"{req.name}: needed ({req.specifier or 'any version'}), not installed")
        elif not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name}: needed {req.specifier}, found {have}")
        else:
            print(f"check: {req.name} {have} (needs {req.specifier or 'any'})")
    for p in problems:
        print(f"error: pyproject.toml: {p}", file=sys.stderr)
    return 1 if problems else 0
