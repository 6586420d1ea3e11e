"""The README and docs/: every relative link resolves, and every figure of the README's verdict table is one its
linked result file shows (a figure typed by hand drifts from the measurement; this test fails when it does)."""

import re

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)")


def anchors(path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_every_relative_link_resolves():
    for doc in DOCS:
        for target, anchor in LINK.findall(doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve()
            assert path.exists(), f"{doc.name} links {target}, which is missing"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path), f"{doc.name} links {target}#{anchor}: no such heading"


def verdict_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("| claim | verdict | the figure | result |", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.strip().splitlines()[1:]]
    return rows


def test_the_verdict_table_has_nine_claims_each_with_its_result_file():
    rows = verdict_rows()
    assert len(rows) == 9
    for claim, verdict, figure, result in rows:
        assert verdict and figure and "bench/results/" in result, claim


def test_every_figure_of_the_verdict_table_is_in_its_result_file():
    for claim, _, figure, result in verdict_rows():
        files = [ROOT / t for t, _ in LINK.findall(result) if t.startswith("bench/results/")]
        shown = " ".join(f.read_text() for f in files)
        for number in re.findall(r"\d+\.\d+", figure):
            assert number in shown, f"{claim}: {number} is in no linked result file ({[f.name for f in files]})"


def test_the_library_snippet_imports_what_it_names():
    """The README's library snippet compiles and each of its imports resolves (a moved name fails here)."""
    text = (ROOT / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    compile(snippet, "README.md", "exec")
    imports = "\n".join(line for line in snippet.splitlines() if line.startswith(("from geodesic", "import geodesic")))
    assert imports.count("\n") >= 3
    exec(imports, {})
