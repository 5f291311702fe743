"""What the nodes of a SLURM cluster offer, and which jobs of a workflow no node can hold.

SLURM queues a job that asks for more CPUs or memory than any node has, and on many clusters it then pends for
ever without an error. The workflow asks `sinfo` for the node sizes before it submits anything and stops with the
rules and amounts at fault instead.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

SINFO_FORMAT = "%P|%c|%m"  # partition (default one marked *), CPUs, memory in MB; one line per node and partition
SINFO_TIMEOUT_S = 30


@dataclass(frozen=True)
class Node:
    partition: str
    cpus: int
    memory_mb: int


@dataclass(frozen=True)
class Request:
    """What one job asks of a node. `cpus` or `memory_mb` None: not asked for (SLURM's default applies)."""

    rule: str
    cpus: int | None
    memory_mb: int | None
    partition: str | None = None


def parse_sinfo(text: str) -> list[Node]:
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, cpus, memory = line.strip().split("|")
        nodes.append(Node(partition.rstrip("*"), int(cpus.rstrip("+")), int(memory.rstrip("+"))))
    return nodes


def cluster_nodes() -> list[Node] | None:
    """The nodes as sinfo lists them, or None where sinfo is missing or fails (then nothing can be checked)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        result = subprocess.run(["sinfo", "--noheader", "--Node", f"--format={SINFO_FORMAT}"], capture_output=True,
                                text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    try:
        return parse_sinfo(result.stdout) or None
    except ValueError:
        return None


def oversized(requests: list[Request], nodes: list[Node]) -> list[str]:
    """One line per rule whose jobs fit no node: of their partition when they name one, of the cluster otherwise."""
    problems = {}
    for request in requests:
        candidates = [n for n in nodes if request.partition in (None, n.partition)]
        if any((request.cpus or 0) <= n.cpus and (request.memory_mb or 0) <= n.memory_mb for n in candidates):
            continue
        where = f"partition {request.partition}" if request.partition else "the cluster"
        if not candidates:
            problems[request.rule] = f"rule {request.rule}: {where} has no nodes"
            continue
        largest_cpus = max(n.cpus for n in candidates)
        largest_memory = max(n.memory_mb for n in candidates)
        problems[request.rule] = (f"rule {request.rule}: a job asks for {request.cpus or 1} CPUs and "
                                  f"{request.memory_mb or 0} MB, but the largest node of {where} has "
                                  f"{largest_cpus} CPUs and {largest_memory} MB")
    return list(problems.values())
