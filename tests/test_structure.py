"""The code reads where the docs say (docs/development.md): the network, the augmentation, the loss,
the optimiser, the kNN and the accumulation are core modules that never touch files or progress
output, even indirectly; no stage imports another stage's module."""
from simclr import deps

CORE = ("model", "augment", "losses", "optim", "knn", "accumulate")
PLUMBING = {"io", "progress", "live", "checkpoint", "cli", "config"}


def reached(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for dep in deps.imports(todo.pop()) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_core_modules_never_reach_io_or_progress():
    for module in CORE:
        assert not reached(module) & PLUMBING, f"{module} reaches {sorted(reached(module) & PLUMBING)}"


def test_no_stage_imports_another_stage():
    for stage in deps.STAGES:
        assert not reached(stage) & (set(deps.STAGES) - {stage}), stage


def test_the_check_sees_a_planted_import(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text("from . import io\n")
    (tmp_path / "io.py").write_text("")
    monkeypatch.setattr(deps, "PACKAGE", tmp_path)
    assert "io" in reached("model")
