"""`hcmi workflow-files`: write the files generated from the declarations — both workflows' definitions from the
step table (hcmi/pipeline.py: the Snakemake rules, workflow/rules/steps.smk, and dvc.yaml) and the JSON schema of
params.yaml from the parameters (hcmi/parameters.py: params.schema.json, for editors and other tools); `--check`
only compares (a test runs it: no file may be stale)."""

from __future__ import annotations

import json
from pathlib import Path

from hcmi.errors import HcmiError
from hcmi.files import write_text
from hcmi.parameters import json_schema
from hcmi.steps import dvc_yaml, snakemake_rules


def params_schema() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


FILES = {"workflow/rules/steps.smk": snakemake_rules.render, "dvc.yaml": dvc_yaml.render,
         "mechanisms/dvc.yaml": dvc_yaml.render_checks, "params.schema.json": params_schema}


class WorkflowFilesDiffer(HcmiError):
    """A committed workflow file differs from what the step table gives."""


def run(root: Path = Path("."), check: bool = False) -> list[str]:
    """Write every generated file under `root` (or, with check, raise WorkflowFilesDiffer naming the stale ones)."""
    stale = [name for name, render in FILES.items()
             if not (root / name).exists() or (root / name).read_text() != render()]
    if check:
        if stale:
            raise WorkflowFilesDiffer(f"{', '.join(stale)} differ from the declarations in hcmi/pipeline.py and "
                                      "hcmi/parameters.py: run `hcmi workflow-files`")
        return []
    for name in stale:
        write_text(root / name, FILES[name]())
    return stale
