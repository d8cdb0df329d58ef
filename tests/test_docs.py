"""Citations resolve: every `docs/science.md §N` in the code names a section that exists, and no
docstring cites a file outside the repository."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("headsweep", "trainables", "sweeps", "analysis", "tests", "benchmarks")
# "docs/science.md §4.2, §8" or "docs/science.md §4.1-4.2": the section numbers after the path
CITATION = re.compile(r"docs/science\.md\s+((?:§[0-9.]+(?:-[0-9.]+)?(?:,\s*)?)+)")


def sources() -> list[Path]:
    return [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]


def sections() -> set[str]:
    text = (REPO / "docs" / "science.md").read_text()
    return set(re.findall(r"^#+ §([0-9.]+)", text, flags=re.MULTILINE))


def test_every_citation_names_an_existing_section():
    known = sections()
    assert {"1", "4.1", "4.2", "8", "10"} <= known
    cited = 0
    for path in sources():
        for match in CITATION.finditer(path.read_text()):
            for ref in re.findall(r"§([0-9.]+)(?:-([0-9.]+))?", match.group(1)):
                for number in filter(None, ref):
                    number = number.rstrip(".")
                    assert number in known, f"{path.relative_to(REPO)}: §{number}"
                    cited += 1
    assert cited > 30


def test_no_citation_points_outside_the_repository():
    for path in sources():
        if path.name == "test_docs.py":
            continue
        assert "SCIENCE.md" not in path.read_text(), path.relative_to(REPO)
