"""The cluster path on a real one-node SLURM (the `slurm_cluster` fixture: Debian's slurmctld, slurmd and munge): the
README's `snakemake --profile profiles/slurm all` runs the tiny pipeline with every job submitted through
sbatch; an scancel of the training job midway is retried and training resumes from its checkpoint to the weights of
an uninterrupted run; a job larger than every node stops the workflow before anything is queued."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import QUICK_PRETRAINING, REPO, require_slurm_plugin
from workflow_helpers import BIN, copy_workflow

require_slurm_plugin()
pytestmark = pytest.mark.slow

PROFILE = ("--profile", "profiles/slurm")
# The test cluster keeps no job accounting, so job states come from squeue (see the profile). Its jobs last
# seconds: the first status check comes after 1 s instead of the plugin's 40. SLURM's log of every job is kept,
# as evidence that the job ran under SLURM.
CLUSTER_OPTIONS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                   "--slurm-keep-successful-logs")
# one model, no ablation and no zero-shot row; training long enough (120 steps, a checkpoint every 30) to be cancelled
# midway; single-threaded sampling, so that two of the three splits share the node's CPUs
TEST_SIZE = {"models": ["baseline"], "ablations": [], "zero_shot": [], "train": {"epochs": 20, "checkpoint_every": 30},
             "compute": {"sample_threads": 1}, **QUICK_PRETRAINING}
TRAIN_RUN = Path("data/checkpoints/synthetic/baseline/seeds/0")
TRAIN_COMMAND = ["train", "--dataset", "synthetic", "--model", "baseline", "--seed", "0"]
# download and weights need the network, so they run where Snakemake runs (localrule), never on a compute node
LOCAL_RULES = {"download", "weights", "all"}
RUN_TIMEOUT_S = 600
WAIT_TIMEOUT_S = 300
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: ([^)]*)\)")


def scratch_workflow(dest: Path, overrides: dict) -> Path:
    """The repository's workflow with the shipped params.yaml, and the test sizes in test-size.yaml."""
    from hcmi.config import deep_merge

    workdir = copy_workflow(dest, yaml.safe_load((REPO / "params.yaml").read_text()))
    tiny = yaml.safe_load((REPO / "tests/fixtures/tiny.yaml").read_text())
    (workdir / "test-size.yaml").write_text(yaml.safe_dump(deep_merge(tiny, overrides), sort_keys=False))
    return workdir


def readme_command() -> list[str]:
    return [str(BIN / "snakemake"), *PROFILE, "all", "--configfile", "test-size.yaml", *CLUSTER_OPTIONS]


def jobs_run(output: str) -> list[tuple[str, str, str]]:
    """(kind, rule, Snakemake job id) of every job Snakemake started, kind `rule` (submitted) or `localrule`."""
    jobs, current = [], None
    for line in output.splitlines():
        header = re.match(r"^(localrule|rule) (\w+):$", line)
        if header:
            current = header.groups()
            continue
        jobid = re.match(r"^\s+jobid: (\d+)$", line)
        if current and jobid:
            jobs.append((*current, jobid.group(1)))
            current = None
    return jobs


def slurm_state(cluster, job: str) -> str:
    """The job's state as squeue shows it; GONE once SLURM forgot it (after MinJobAge)."""
    result = cluster.run("squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={job}", check=False)
    state = result.stdout.strip() if result.returncode == 0 else ""
    return state or "GONE"


def wait_for(condition, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"snakemake exited ({process.returncode}) before {what}:\n{log.read_text()[-5000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {WAIT_TIMEOUT_S} s:\n{log.read_text()[-5000:]}")


def train_by_hand(workdir: Path, root: Path) -> subprocess.Popen:
    """The same training step as the workflow's job, launched by hand on the same data with the same parameters
    (the merged params file the workflow's jobs read) and thread count, into its own checkpoint folder."""
    (root / "data").mkdir(parents=True)
    for sub in ("raw", "frames", "weights"):
        (root / "data" / sub).symlink_to(workdir / "data" / sub)
    params_file = workdir / ".snakemake/hcmi/params.yaml"
    threads = yaml.safe_load(params_file.read_text())["compute"]["train_threads"]
    return subprocess.Popen([sys.executable, "-m", "hcmi.cli", "--params", str(params_file), "--data-root",
                             str(root / "data"), *TRAIN_COMMAND], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


@dataclass
class CancelledRun:
    workdir: Path
    returncode: int
    output: str
    cancelled_job: str
    cancelled_job_cpus: int  # as SLURM allocated them
    state_after_cancel: str
    checkpoint_at_cancel: dict
    reference: Path  # the training folder of the run by hand


@pytest.fixture(scope="module")
def cancelled_run(slurm_cluster, tmp_path_factory) -> CancelledRun:
    """The README's cluster command on the tiny pipeline; once its training job wrote a checkpoint, the job is
    cancelled with scancel. Beside the retried job, the same training runs by hand as the uninterrupted reference."""
    import torch

    base = tmp_path_factory.mktemp("slurm")
    workdir = scratch_workflow(base / "repo", TEST_SIZE)
    log_path, checkpoint = base / "snakemake.log", workdir / TRAIN_RUN / "state/last.pt"
    with open(log_path, "w") as log:
        snakemake = subprocess.Popen(readme_command(), cwd=workdir, env=slurm_cluster.client_env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def training_job() -> str | None:
        if not checkpoint.exists():
            return None
        return next((job for _, job, slurm_log in SUBMITTED.findall(log_path.read_text())
                     if "/rule_train/" in slurm_log), None)

    reference = None
    try:
        job = wait_for(training_job, "a checkpoint of the training job", snakemake, log_path)
        cpus = re.search(r"NumCPUs=(\d+)", slurm_cluster.run("scontrol", "show", "job", job).stdout).group(1)
        slurm_cluster.run("scancel", job)

        def ended() -> str | None:
            state = slurm_state(slurm_cluster, job)
            return None if state in ACTIVE_STATES else state

        state = wait_for(ended, "the end of the cancelled job", snakemake, log_path)
        saved = torch.load(checkpoint, weights_only=False)
        reference = train_by_hand(workdir, base / "by-hand")
        returncode = snakemake.wait(timeout=RUN_TIMEOUT_S)
        reference_output, _ = reference.communicate(timeout=RUN_TIMEOUT_S)
        assert reference.returncode == 0, reference_output
    finally:  # after a failure: stop the run, its jobs and the run by hand
        if snakemake.poll() is None:
            os.killpg(snakemake.pid, signal.SIGKILL)
            snakemake.wait(timeout=RUN_TIMEOUT_S)
        if reference is not None and reference.poll() is None:
            reference.kill()
            reference.wait(timeout=RUN_TIMEOUT_S)
        submitted = [slurm_job for _, slurm_job, _ in SUBMITTED.findall(log_path.read_text())]
        if submitted:
            slurm_cluster.run("scancel", *submitted, check=False)
    return CancelledRun(workdir, returncode, log_path.read_text(), job, int(cpus), state,
                        {"step": saved["step"], "finished": saved["finished"]},
                        base / "by-hand/data/checkpoints/synthetic/baseline/seeds/0")


def test_a_cluster_started_here_stops_without_leaving_daemons_or_jobs(slurm_cluster):
    import psutil

    from slurm_cluster import one_node_cluster

    if slurm_cluster.root is None:
        pytest.skip("the machine's own cluster is in use: these tests start none")
    marker = str(1000 + os.getpid() % 1000)  # a job only this test runs: `sleep <marker>`
    with one_node_cluster() as cluster:  # a second cluster beside the session's: its own folder, socket and ports
        root = cluster.root
        job = cluster.run("sbatch", "--parsable", f"--chdir={root}", "--wrap", f"sleep {marker}").stdout.strip()
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while slurm_state(cluster, job) != "RUNNING":
            assert time.monotonic() < deadline, f"job {job} never started: {slurm_state(cluster, job)}"
            time.sleep(0.2)

    def ours(process) -> bool:
        try:
            command = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False
        return str(root) in command or command == f"sleep {marker}"

    assert not [p.info for p in psutil.process_iter(["pid", "name"]) if ours(p)], "daemons or the job survived"
    assert not root.exists()
    assert slurm_cluster.run("sinfo", "--noheader", "--format=%T").stdout.strip() == "idle", "the session's is intact"


def test_a_job_larger_than_every_node_stops_the_workflow_before_anything_is_queued(slurm_cluster, tmp_path):
    too_many = slurm_cluster.cpus_per_node + 1
    workdir = scratch_workflow(tmp_path / "repo", {**TEST_SIZE, "compute": {"train_threads": too_many}})
    jobs_before = set(slurm_cluster.job_ids())
    result = subprocess.run(readme_command(), cwd=workdir, env=slurm_cluster.client_env(), capture_output=True,
                            text=True, timeout=RUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "would never start on this cluster" in output, output[-3000:]
    assert f"rule train: a job asks for {too_many} CPUs" in output
    assert f"largest node of the cluster has {slurm_cluster.cpus_per_node} CPUs" in output
    assert "compute.train_threads" in output, "the message names the parameter to change"
    assert not SUBMITTED.search(output) and set(slurm_cluster.job_ids()) == jobs_before, "nothing was queued"
    assert not (workdir / "data").exists(), "no job ran, not even the local ones"


def test_readme_command_runs_the_tiny_pipeline_with_every_job_submitted_through_sbatch(cancelled_run, slurm_cluster):
    run = cancelled_run
    assert run.returncode == 0, run.output[-5000:]
    results = "data/results/synthetic/baseline"
    for path in ("data/reports/index.html", "data/reports/synthetic.html", f"{results}/metrics.json",
                 f"{results}/seeds/0/metrics.json"):
        assert (run.workdir / path).stat().st_size > 0, path

    jobs = jobs_run(run.output)
    submitted_jobs = {jobid: rule for kind, rule, jobid in jobs if kind == "rule"}
    assert {rule for kind, rule, _ in jobs if kind == "localrule"} == LOCAL_RULES
    assert set(submitted_jobs.values()) == {"parse", "sample", "train", "evaluate", "summarize", "dataset_report",
                                            "index_report"}
    submissions = SUBMITTED.findall(run.output)
    assert {jobid for jobid, _, _ in submissions} == set(submitted_jobs), "every non-local job went through sbatch"
    slurm_ids = [slurm_job for _, slurm_job, _ in submissions]
    assert len(set(slurm_ids)) == len(slurm_ids) == len(submitted_jobs) + 1, "one job id each, and the retry"
    for jobid, slurm_job, slurm_log in submissions:
        text = Path(slurm_log).read_text()  # written by slurmstepd: the job ran under SLURM
        assert f"rule {submitted_jobs[jobid]}:" in text, (slurm_job, text[-2000:])
    active = slurm_cluster.run("squeue", "--noheader", "--format=%i", f"--jobs={','.join(slurm_ids)}",
                               f"--states={','.join(ACTIVE_STATES)}", check=False).stdout.split()
    assert not active, f"jobs left on the cluster: {active}"


def test_an_scancelled_training_job_is_retried_and_resumes_to_the_uninterrupted_weights(cancelled_run):
    import torch

    run = cancelled_run
    assert run.returncode == 0, run.output[-5000:]
    assert run.state_after_cancel == "CANCELLED"
    params = yaml.safe_load((run.workdir / ".snakemake/hcmi/params.yaml").read_text())
    assert run.cancelled_job_cpus == params["compute"]["train_threads"], "CPUs per training job come from params"
    step = run.checkpoint_at_cancel["step"]
    assert step > 0 and not run.checkpoint_at_cancel["finished"], "the cancel landed midway through training"
    assert f"SLURM-job '{run.cancelled_job}' failed, SLURM status is: 'CANCELLED'" in run.output
    train_jobs = [slurm_job for _, slurm_job, log in SUBMITTED.findall(run.output) if "/rule_train/" in log]
    assert len(train_jobs) == 2 and train_jobs[0] == run.cancelled_job, "the profile's retry resubmitted it"
    train_log = (run.workdir / "logs/train/synthetic-baseline-0.log").read_text()
    assert f"resuming from step {step} of" in train_log, train_log[-2000:]

    trained = run.workdir / TRAIN_RUN
    resumed, straight = (torch.load(folder / "model.pt", weights_only=False) for folder in (trained, run.reference))
    assert resumed["state_dict"].keys() == straight["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    pd.testing.assert_series_equal(pd.read_csv(trained / "train_log.csv")["loss"],
                                   pd.read_csv(run.reference / "train_log.csv")["loss"])
