"""What lets others reuse and cite the project: an MIT licence and a citation file naming SimCLR."""
import yaml

from conftest import ROOT
from simclr import __version__


def test_licence_is_mit_and_declared():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert 'license = {text = "MIT"}' in (ROOT / "pyproject.toml").read_text()


def test_citation_file_cites_this_version_and_the_simclr_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == __version__ and cff["authors"]
    paper = cff["references"][0]
    assert paper["title"] == "A Simple Framework for Contrastive Learning of Visual Representations"
    assert [a["family-names"] for a in paper["authors"]] == ["Chen", "Kornblith", "Norouzi", "Hinton"]
    assert paper["year"] == 2020 and "2002.05709" in paper["url"]


def test_ci_installs_the_tested_versions_through_the_constraints_file_within_the_declared_ranges():
    """pyproject declares ranges (a user's torch is kept); constraints.txt pins what CI tests, CI and
    README's test command install through it, and README names the pinned torch/torchvision."""
    import re
    import tomllib

    from packaging.specifiers import SpecifierSet

    def norm(name):  # PEP 503: PyYAML and pyyaml are one package
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {norm(line.split("==")[0]): line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", dep).groups()
        name = norm(name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert pins[name] in SpecifierSet(spec), f"{name}=={pins[name]} is outside pyproject's {spec!r}"
    assert not any("==" in dep for dep in deps)  # ranges, never exact pins
    command = 'pip install -q -c constraints.txt -e ".[pipeline,cluster,test]" && pytest'
    assert command in (ROOT / ".ci" / "run").read_text() and command in (ROOT / "README.md").read_text()
    assert f"Tested with torch {pins['torch']}/torchvision {pins['torchvision']} (CI, CPU)" in \
        (ROOT / "docs" / "operations.md").read_text().replace("\n", " ")

