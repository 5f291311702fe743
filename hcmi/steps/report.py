"""`hcmi report --dataset D` renders one dataset's HTML report; `hcmi report --index` the summary over every dataset
and data/reports/results.md (the results tables in Markdown, from which the README's results section is made);
`hcmi report --mechanisms` the mechanism checks' report and data/reports/mechanisms.md.
The notebooks read their parameters through the same restricted view as every step (the declared keys are passed)."""

from __future__ import annotations

import logging

from hcmi.files import write_text
from hcmi.report.render import notebook_path, render
from hcmi.report.mechanisms import mechanisms_markdown
from hcmi.report.tables import results_markdown

log = logging.getLogger(__name__)


def _parameters(params, layout, params_files) -> dict:
    return {"data_root": str(layout.root), "params_files": [str(f) for f in params_files],
            "declared": list(params.allowed) if params.allowed is not None else None}


def run_dataset(params, layout, dataset: str, params_files):
    return render(notebook_path("report.ipynb"), {"dataset": dataset, **_parameters(params, layout, params_files)},
                  layout.report(dataset))


def run_index(params, layout, params_files):
    declared = list(params.allowed) if params.allowed is not None else None
    write_text(layout.results_summary(), results_markdown(layout.root, params_files, declared) + "\n")
    return render(notebook_path("index.ipynb"), _parameters(params, layout, params_files), layout.index_report())


def run_mechanisms(params, layout, params_files):
    declared = list(params.allowed) if params.allowed is not None else None
    write_text(layout.mechanisms_summary(), mechanisms_markdown(layout.root, params_files, declared) + "\n")
    return render(notebook_path("mechanisms.ipynb"), _parameters(params, layout, params_files),
                  layout.mechanisms_report())
