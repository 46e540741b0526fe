"""No stale answers: in a fresh clone and in a used workspace, after a change to params, code or data,
asking Snakemake for any output either plans exactly the stale jobs or stops before any job naming
the command that fixes it (README: "Snakemake and DVC side by side"). Real git, dvc and snakemake."""
import shutil

import pytest

from conftest import fresh_clone, make_layout, pending, sh

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs

STAGES = {"prepare", "validate", "pretrain", "extract", "probe"}
DVC_TARGETS = ("metrics/probe.json", "data/manifest.json", "models/simclr.pt")


def refused(project, target):
    """`snakemake <DVC output>`: stops before any job, naming the results/ path and the command."""
    proc = sh(project, "snakemake", target, "--cores", "1", "--resources", "gpu=1", check=False)
    text = proc.stdout + proc.stderr
    return (proc.returncode != 0 and f"{target} is written by DVC (dvc repro), not by this workflow" in text
            and f"run `snakemake results/{target} --cores 1 --resources gpu=1`" in text
            and "Finished job" not in text and "rule prepare:" not in text)


def test_fresh_clone_runs_everything_and_never_answers_with_the_committed_baseline(dvc_baseline, tmp_path):
    clone = fresh_clone(dvc_baseline, tmp_path / "clone")
    assert (clone / "metrics" / "probe.json").exists() and (clone / "data" / "manifest.json").exists()
    assert pending(clone) == STAGES
    assert pending(clone, "results/metrics/probe.json") == STAGES
    assert pending(clone, "results/data/manifest.json") == {"prepare", "validate"}
    # a target short of `all` starts from prepare (a committed manifest no longer lets it be skipped,
    # and pretrain declares the dataset folder it reads): it builds, as the snakemade fixture's run shows
    assert pending(clone, "results/models/simclr.pt") == {"prepare", "validate", "pretrain"}
    for target in DVC_TARGETS:
        assert refused(clone, target), target
    assert not (clone / "results").exists()


@pytest.fixture
def used(snakemade):
    """A fresh clone after a whole Snakemake run, with nothing pending."""
    assert pending(snakemade) == set()
    return snakemade


def edited(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    return text


CHANGES = {  # what the user edits -> what is stale for (default target, committed metric's twin, manifest's twin)
    "params": ("params.yaml", "c_num: 2", "c_num: 3", {"probe"}, {"probe"}, set()),
    "code in extract's closure": ("src/simclr/extract.py", '"""Stage `extract`', '# edited\n"""Stage `extract`',
                                  {"extract", "probe"}, {"extract", "probe"}, set()),
    "code in every closure": ("src/simclr/io.py", '"""Atomic writes', '# edited\n"""Atomic writes', STAGES, STAGES,
                              {"prepare", "validate"}),
    "dataset": ("params.yaml", "limit_per_class: 4", "limit_per_class: 5", STAGES, STAGES, {"prepare", "validate"}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_change_makes_exactly_its_outputs_stale_for_every_target(used, change):
    name, old, new, default, metric, manifest = CHANGES[change]
    before = edited(used / name, old, new)
    try:
        assert pending(used) == default
        assert pending(used, "results/metrics/probe.json") == metric
        assert pending(used, "results/data/manifest.json") == manifest
        if change == "params":  # the guard is decided before any DAG exists: one state shows it
            assert all(refused(used, target) for target in DVC_TARGETS[:2])  # the committed metric and manifest
    finally:
        (used / name).write_text(before)
    assert pending(used) == set()  # the same content again: nothing stale (Snakemake compares checksums)


def test_outputs_from_one_commit_and_params_from_another(used, dvc_baseline):
    """git checkout moves params and the committed baseline; results/ stays what Snakemake made."""
    origin, commit, _ = dvc_baseline
    edited(used / "params.yaml", "shot_draws: 2", "shot_draws: 3")
    sh(used, "git", "commit", "-qam", "another probe setting")
    sh(used, "git", "checkout", "-q", commit)
    assert pending(used) == set()  # results/ were made with this commit's params
    sh(used, "git", "checkout", "-q", "-")
    assert pending(used) == {"probe"}  # ... and not with the other commit's
    sh(used, "git", "checkout", "-q", commit)
    assert pending(used) == set()


def test_a_changed_file_in_a_folder_source_reruns_from_prepare(tmp_path, used):
    """data.source: folder - the user's layout lives elsewhere; a file added deep inside it is seen."""
    folder = make_layout(tmp_path / "mine", per_class=6, size=16)
    project = tmp_path / "project"
    shutil.copytree(used, project, ignore=shutil.ignore_patterns("results", ".snakemake"))
    edited(project / "params.yaml", "source: digits", "source: folder")
    edited(project / "params.yaml", "folder: null", f"folder: {folder}")
    manifest = "results/data/manifest.json"
    sh(project, "snakemake", manifest, "--cores", "1", "--resources", "gpu=1")
    assert pending(project, manifest) == set() and pending(project) == STAGES - {"prepare", "validate"}
    make_layout(tmp_path / "extra", per_class=7, size=16)
    shutil.copy(tmp_path / "extra" / "train" / "dog" / "006.png", folder / "train" / "dog" / "006.png")
    assert pending(project, manifest) == {"prepare", "validate"} and pending(project) == STAGES
    sh(project, "snakemake", manifest, "--cores", "1", "--resources", "gpu=1")
    assert '"images": 19' in (project / manifest).read_text()  # 3 classes x 6 + the new one
