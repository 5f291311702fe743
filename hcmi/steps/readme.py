"""`hcmi readme-results`: put the results tables the pipeline wrote (data/reports/results.md) into README.md,
between its results markers, so the README's numbers are the pipeline's, not typed by hand."""

from __future__ import annotations

from pathlib import Path

from hcmi.errors import HcmiError
from hcmi.files import write_text

START = "<!-- results: written by `hcmi readme-results` from data/reports/results.md; do not edit by hand -->"
END = "<!-- /results -->"


class ReadmeError(HcmiError):
    """The README has no results markers, or the results file is missing."""


def replace_results(readme: str, results: str) -> str:
    if START not in readme or END not in readme:
        raise ReadmeError(f"the README has no results section: add the lines\n{START}\n{END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{results.strip()}\n{END}{tail}"


def run(layout, readme: Path = Path("README.md")) -> None:
    results = layout.results_summary()
    if not results.exists():
        raise ReadmeError(f"{results}: not found; run the pipeline first (`snakemake --cores 8 all`)")
    write_text(readme, replace_results(readme.read_text(), results.read_text()))
