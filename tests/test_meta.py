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
