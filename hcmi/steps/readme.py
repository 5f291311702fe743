"""`hcmi readme-results`: put the tables the pipeline wrote into README.md between their markers — the results
(data/reports/results.md) and, once `snakemake mechanisms` ran, the mechanism checks (data/reports/mechanisms.md) —
so the README's numbers are the pipeline's, not typed by hand."""

from __future__ import annotations

from pathlib import Path

from hcmi.errors import HcmiError
from hcmi.files import write_text

START = "<!-- results: written by `hcmi readme-results` from data/reports/results.md; do not edit by hand -->"
END = "<!-- /results -->"
CHECKS_START = ("<!-- mechanisms: written by `hcmi readme-results` from data/reports/mechanisms.md; do not edit by "
                "hand -->")
CHECKS_END = "<!-- /mechanisms -->"


class ReadmeError(HcmiError):
    """The README has no results markers, or the results file is missing."""


def replace_results(readme: str, results: str, start: str = START, end: str = END) -> str:
    if start not in readme or end not in readme:
        raise ReadmeError(f"the README has no section for these tables: add the lines\n{start}\n{end}")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{results.strip()}\n{end}{tail}"


def run(layout, readme: Path = Path("README.md")) -> None:
    results = layout.results_summary()
    if not results.exists():
        raise ReadmeError(f"{results}: not found; run the pipeline first (`snakemake --cores 8 all`)")
    text = replace_results(readme.read_text(), results.read_text())
    checks = layout.mechanisms_summary()
    if checks.exists():
        text = replace_results(text, checks.read_text(), CHECKS_START, CHECKS_END)
    write_text(readme, text)
