"""Run the independent jobs of a grid: one after another in this process, or as Ray tasks on this machine or a
cluster. Either way one progress line (done, running, failed, ETA) and one record per event in ``sweep.jsonl``.

A job is a module-level function and one argument of plain data, so that it travels to another process by
reference. It writes what it makes to storage every node sees; :func:`run_jobs` returns what each job returned.

With Ray:

- each job is a task with ``num_cpus`` (torch threads are set to it) and ``num_gpus`` (a fraction lets runs share
  a GPU); workers print nothing to the driver;
- a job whose worker process dies (killed, out of memory, a lost node) is retried up to ``retries`` times; a job
  that raises is not retried: its one-line error is reported while the others go on;
- without ``address`` Ray is started embedded, on loopback only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set
  before it starts (without it Ray binds the machine's network address even when told 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvm_policy.errors import ConfigError

RAY_INSTALL = "pip install -c constraints.txt -e '.[ray]'"
RAY_HINT = f"runs go one after another; for parallel runs and clusters: {RAY_INSTALL}"


@dataclass(frozen=True)
class Job:
    key: str  # unique in the sweep, e.g. "tree_avoid/lvm-seed0"
    fn: Callable[[Any], Any]  # a module-level function
    arg: Any


@dataclass
class Outcome:
    key: str
    result: Any = None
    error: str | None = None  # one line; None when the job finished
    seconds: float = 0.0
    node: str | None = None


def append_event(log: Path, **event: Any) -> None:
    """One JSON line; a single short write to a file opened for appending, so concurrent writers do not mix."""
    line = json.dumps(dict(time=round(time.time(), 3), **event)) + "\n"
    with open(log, "a") as f:
        f.write(line)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _node_name() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address() + ":" + ray.get_runtime_context().get_node_id()[:8]
    except ImportError:
        pass
    return socket.gethostname()


def call_job(fn: Callable[[Any], Any], arg: Any, key: str, log: str, threads: int) -> dict[str, Any]:
    """Runs where the job runs: torch threads, the start record, the job; an exception becomes a value."""
    import torch

    torch.set_num_threads(threads)
    node = _node_name()
    try:
        append_event(Path(log), event="start", run=key, node=node, pid=os.getpid())
    except OSError:  # a worker that cannot reach the log still runs its job
        pass
    t = time.perf_counter()
    try:
        result = fn(arg)
    except Exception as exc:  # noqa: BLE001  reported with the job's name; the sweep goes on
        return dict(error=one_line(exc), traceback=traceback.format_exc(), seconds=time.perf_counter() - t, node=node)
    return dict(result=result, seconds=time.perf_counter() - t, node=node)


class Progress:
    """One line on stderr: redrawn in place on a terminal, printed on each change otherwise."""

    def __init__(self, total: int, capacity: int):
        self.total, self.capacity = total, max(1, capacity)
        self.done = self.failed = 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def line(self) -> str:
        finished = self.done + self.failed
        running = min(self.capacity, self.total - finished)
        elapsed = time.perf_counter() - self.t0
        eta = "–" if not finished else _duration(elapsed / finished * (self.total - finished))
        return (
            f"sweep: {self.done}/{self.total} done, {running} running, {self.failed} failed, "
            f"{_duration(elapsed)} elapsed, ETA {eta}"
        )

    def draw(self) -> None:
        print(("\r\033[K" if self.tty else "") + self.line(), end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        """A line printed above the progress line."""
        if self.tty:
            print("\r\033[K", end="", file=sys.stderr)
        print(text, flush=True)
        self.draw()

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def run_jobs(
    jobs: list[Job],
    log: Path,
    *,
    use_ray: bool = True,
    address: str | None = None,
    cpus_per_job: int = 1,
    gpus_per_job: float = 0.0,
    retries: int = 3,
    parallel: int | None = None,
    on_result: Callable[[Job, Outcome], str | None] | None = None,
) -> dict[str, Outcome]:
    """Run every job; returns each job's outcome by key. ``parallel`` caps the jobs at once on an embedded Ray
    instance (its CPUs: parallel x cpus_per_job). ``on_result`` may return a line to print."""
    if len({j.key for j in jobs}) != len(jobs):
        raise ValueError("job keys must be unique")
    log = Path(log).resolve()
    log.parent.mkdir(parents=True, exist_ok=True)
    if use_ray:
        if address is None:
            _loopback_only()  # before Ray is imported: it reads the variable once, at import
        try:
            import ray  # noqa: F401
        except ImportError:
            if address is not None:
                raise ConfigError("--address joins a Ray cluster, but Ray is not installed: " + RAY_INSTALL) from None
            print(f"note: Ray is not installed: {RAY_HINT}", file=sys.stderr)
            use_ray = False
    backend = "ray" if use_ray else "serial"
    append_event(log, event="sweep", runs=len(jobs), backend=backend, address=address, cpus_per_run=cpus_per_job)
    outcomes: dict[str, Outcome] = {}

    def finish(job: Job, out: dict[str, Any], progress: Progress) -> None:
        outcome = Outcome(job.key, out.get("result"), out.get("error"), out.get("seconds", 0.0), out.get("node"))
        outcomes[job.key] = outcome
        event = dict(event="end", run=job.key, node=outcome.node, seconds=round(outcome.seconds, 3))
        if outcome.error is None:
            progress.done += 1
            append_event(log, **event, outcome="ok")
            text = on_result(job, outcome) if on_result else None
        else:
            progress.failed += 1
            append_event(log, **event, outcome="failed", error=outcome.error, traceback=out.get("traceback"))
            text = f"{job.key} failed: {outcome.error}"
        if text:
            progress.message(text)
        else:
            progress.draw()

    if not use_ray:
        import torch

        threads = torch.get_num_threads()
        progress = Progress(len(jobs), 1)
        progress.draw()
        try:
            for job in jobs:
                finish(job, call_job(job.fn, job.arg, job.key, str(log), cpus_per_job), progress)
        finally:
            torch.set_num_threads(threads)
            progress.close()
        return outcomes
    num_cpus = None if parallel is None else parallel * cpus_per_job
    _run_ray(jobs, log, address, cpus_per_job, gpus_per_job, retries, finish, num_cpus)
    return outcomes


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _loopback_only() -> None:
    """Keep an embedded Ray on 127.0.0.1: its processes read the variable when they start (they inherit it), the
    Python side when ``ray`` is imported; if that happened earlier, the value read then is corrected too."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def _run_ray(jobs, log, address, cpus, gpus, retries, finish, num_cpus) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here and threading.current_thread() is threading.main_thread():
        # A terminated driver must still stop the instance it started: without this, SIGTERM ends the process
        # before the finally below, and the embedded Ray (and the runs on it) keep going, orphaned.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if started_here:
        root = str(Path(__file__).resolve().parent.parent)  # workers import the package from this checkout too
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        ray.init(
            address=address,
            include_dashboard=False if address is None else None,
            log_to_driver=False,
            num_cpus=num_cpus if address is None else None,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    try:
        capacity = int(ray.cluster_resources().get("CPU", 1) // cpus)
        if gpus:
            capacity = min(capacity, int(ray.cluster_resources().get("GPU", 0) // gpus))
        remote = ray.remote(call_job).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries)
        pending = {remote.remote(j.fn, j.arg, j.key, str(log), cpus): j for j in jobs}
        progress = Progress(len(jobs), capacity)
        progress.draw()
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died on every try
                        out = dict(error=f"its worker was lost {retries + 1} times ({type(exc).__name__})")
                    finish(job, out, progress)
                if not ready and progress.tty:
                    progress.draw()  # the clock moves
        finally:
            progress.close()
    finally:
        if started_here:
            ray.shutdown()
