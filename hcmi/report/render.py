"""Rendering the report notebooks: papermill executes a notebook (notebooks/ at the top level; an installed wheel
carries them inside the package) with
parameters, nbconvert turns the result into a self-contained HTML page (code hidden, figures embedded), written
atomically next to the executed notebook."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from hcmi.codebase import notebooks_dir
from hcmi.files import write_text

log = logging.getLogger(__name__)

def notebook_path(name: str) -> Path:
    return notebooks_dir() / name


def render(notebook: Path, parameters: dict, html_out: Path) -> Path:
    """Execute `notebook` with `parameters`; write the executed .ipynb and the HTML (input cells hidden)."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    html_out = Path(html_out)
    executed = html_out.with_suffix(".ipynb")
    html_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=html_out.parent) as tmp:
        scratch = Path(tmp) / executed.name
        papermill.execute_notebook(str(notebook), str(scratch), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(Path.cwd()), log_output=False)
        node = nbformat.read(scratch, as_version=4)
        body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(node)
        write_text(executed, scratch.read_text())
    write_text(html_out, body)
    log.info("report written: %s", html_out)
    return html_out
