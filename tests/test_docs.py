"""README.md and docs/: every relative link reaches a file (and a heading, with #anchor), and every
project path a command block names exists. A newcomer's first hour should not meet a dead end."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(bash|console|sh|)\n(.*?)```", re.S)  # command blocks (group 2)
ANY_FENCE = re.compile(r"```[^\n]*\n.*?```", re.S)
# project paths as they appear in commands: top-level folders that git tracks
PATH = re.compile(r"(?<![\w./-])((?:configs|sweeps|benchmarks|workflow|src|tests|docs)/[\w.+-]+(?:/[\w.+-]+)*/?)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = ANY_FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.+)$", text)}


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    first_screen = "\n".join(lines[:60])
    assert "| linear top-1 |" in first_screen and "embedding.png" in first_screen  # results and picture first


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_a_heading(doc):
    broken = []
    for m in LINK.finditer(doc.read_text()):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_paths_in_command_blocks_exist(doc):
    missing = set()
    for _, block in FENCE.findall(doc.read_text()):
        for path in PATH.findall(block):
            if not (ROOT / path.rstrip(".")).exists():
                missing.add(path)
    assert not missing, f"{doc.name}: command blocks name paths that do not exist: {sorted(missing)}"


def test_the_check_can_fail(tmp_path):
    """The slug and the path pattern catch what they are for (a dead link, a missing preset)."""
    assert slug("What the metrics mean (`metrics/probe.json`)") == "what-the-metrics-mean-metricsprobejson"
    assert PATH.findall("snakemake --configfile configs/nope.yaml") == ["configs/nope.yaml"]
    assert not (ROOT / "configs/nope.yaml").exists()
