"""`hcmi workflow-files`: write both workflows' definitions from the step table (hcmi/pipeline.py) — the Snakemake
rules (workflow/rules/steps.smk) and dvc.yaml; `--check` only compares (a test runs it: neither file may be stale)."""

from __future__ import annotations

from pathlib import Path

from hcmi.errors import HcmiError
from hcmi.files import write_text
from hcmi.steps import dvc_yaml, snakemake_rules

FILES = {"workflow/rules/steps.smk": snakemake_rules.render, "dvc.yaml": dvc_yaml.render}


class WorkflowFilesDiffer(HcmiError):
    """A committed workflow file differs from what the step table gives."""


def run(root: Path = Path("."), check: bool = False) -> list[str]:
    """Write every generated file under `root` (or, with check, raise WorkflowFilesDiffer naming the stale ones)."""
    stale = [name for name, render in FILES.items()
             if not (root / name).exists() or (root / name).read_text() != render()]
    if check:
        if stale:
            raise WorkflowFilesDiffer(f"{', '.join(stale)} differ from the step table in hcmi/pipeline.py: run "
                                      "`hcmi workflow-files`")
        return []
    for name in stale:
        write_text(root / name, FILES[name]())
    return stale
