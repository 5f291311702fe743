"""`hcmi sync`: make Snakemake see what DVC knows, after `dvc pull` or `dvc checkout`.

DVC decides by content hash (dvc.lock); Snakemake by modification times and its own records in .snakemake/. Files
that DVC restores arrive with new times in arbitrary order, and .snakemake/ is either missing (fresh clone) or
describes another branch, so a plain `snakemake all` would redo finished work, or miss real changes.

The mechanism: DVC, the authority on contents, is asked which stages are up to date (`dvc status`). Then
  1. every stage whose own inputs, parameters, command and outputs match dvc.lock, and whose upstream stages all
     do too, is marked done in Snakemake with `snakemake --touch --forceall <its outputs>`: Snakemake touches the
     outputs in DAG order and records the current parameters and commands as the ones they were made with;
  2. every stage that DVC reports as changed gets outputs dated 1970, so Snakemake re-runs it and, as usual,
     everything downstream of it.
Afterwards `snakemake all` runs exactly what changed (nothing, when the checkout is complete and current), and later
edits to params.yaml are detected by Snakemake's own rerun triggers as always.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from hcmi.errors import HcmiError

log = logging.getLogger(__name__)


class SyncError(HcmiError):
    """DVC or Snakemake could not report or record the pipeline state."""


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def changed_stages(repo_dir: Path) -> dict:
    """{stage address: what changed} for the stages DVC would re-run (an empty dict when all is current)."""
    result = subprocess.run([_bin("dvc"), "status", "--json"], cwd=repo_dir, capture_output=True, text=True)
    if result.returncode != 0:
        raise SyncError(f"`dvc status` failed in {repo_dir}:\n{result.stderr.strip()}")
    text = result.stdout.strip()
    return json.loads(text[text.index("{"):]) if "{" in text else {}


def stage_outputs(repo_dir: Path) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """(stage address -> declared non-persistent outputs, stage address -> addresses of all its upstream stages)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo_dir)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        outputs = {stage.addressing: [out.def_path for out in stage.outs if not out.persist]
                   for stage in repo.index.stages}
        upstream = {stage.addressing: {s.addressing for s in nx.descendants(graph, stage)}
                    for stage in repo.index.stages}
    return outputs, upstream


def plan(outputs: dict[str, list[str]], upstream: dict[str, set[str]], changed: dict) -> tuple[list[str], list[str]]:
    """(stages to mark done, stages to re-run)."""
    dirty = set(changed)
    clean = [s for s in outputs if s not in dirty and not (upstream[s] & dirty)]
    return clean, sorted(dirty)


def run(repo_dir: Path = Path("."), snakemake_args: list[str] | None = None) -> dict:
    repo_dir = Path(repo_dir)
    changed = changed_stages(repo_dir)
    outputs, upstream = stage_outputs(repo_dir)
    clean, rerun = plan(outputs, upstream, changed)

    for stage in rerun:
        for path in outputs.get(stage, []):
            target = repo_dir / path
            if target.is_file():
                os.utime(target, (0, 0))  # older than any input: Snakemake re-runs the stage
    targets = [path for stage in clean for path in outputs[stage] if (repo_dir / path).exists()]
    if targets:
        extra = [a for a in (snakemake_args or []) if a != "--"]
        command = [_bin("snakemake"), "--touch", "--forceall", "--cores", "1", *extra, "--", *targets]
        result = subprocess.run(command, cwd=repo_dir, capture_output=True, text=True)
        if result.returncode != 0:
            raise SyncError(f"`snakemake --touch` failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    log.info("%d stages match dvc.lock and are marked done for Snakemake; %d changed and will re-run%s",
             len(clean), len(rerun), (": " + ", ".join(rerun)) if rerun else "")
    return {"marked_done": clean, "rerun": rerun}
