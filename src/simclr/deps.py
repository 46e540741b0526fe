"""Which package files each stage runs: the import closure, computed from the source.

dvc.yaml's and the Snakefile's code deps and pretrain's checkpoint fingerprint all come from here
(tests/test_dag.py fails if dvc.yaml lists a file too few or too many), so a change to any file a
stage imports reruns that stage. A stage runs as `simclr <stage>`: the package, cli.py and config.py
(with the params schema it reads) and the stage module, each with everything it imports. cli.py
imports every stage lazily; only the stage's own module counts.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).parent
STAGES = ("prepare", "validate", "pretrain", "extract", "probe")
HELPERS = ("sweep", "exps")  # modules behind `simclr <helper>` or the package API: in no stage's closure
ENTRY = ("__init__", "cli", "config")  # what `simclr <stage>` runs before the stage module
DATA = {"config": ["params.schema.yaml"]}  # package files a module reads (not imports)


def imports(module: str) -> set[str]:
    """Package modules that `module` imports (relative or as simclr.x), at any depth of its code."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:       # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:                       # from . import x, y
                found.update(a.name for a in node.names)
            elif node.module and node.module.split(".")[0] == "simclr":
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("simclr."))
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


@lru_cache(maxsize=None)
def closure(stage: str) -> tuple[str, ...]:
    """File names (relative to the package) that `simclr <stage>` (or a helper: `simclr sweep`) runs or reads, sorted."""
    if stage not in STAGES + HELPERS:
        raise ValueError(f"stage: expected one of {STAGES + HELPERS}, found {stage!r}")
    seen: set[str] = set()
    todo = [*ENTRY, stage]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [m for m in imports(module) if (m not in STAGES and m not in HELPERS) or m == stage]
    files = {f"{m}.py" for m in seen} | {f for m in seen for f in DATA.get(m, [])}
    return tuple(sorted(files))


def code_deps(stage: str, prefix: str = "src/simclr") -> list[str]:
    """closure(stage) as paths from the repository root, as dvc.yaml and the Snakefile list them."""
    return [f"{prefix}/{name}" for name in closure(stage)]
