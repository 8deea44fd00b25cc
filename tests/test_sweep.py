"""The sweep runner: failures reported while the rest go on, a dead worker's job retried, Ray on loopback only;
and compare_baselines' grid through it: an interrupted sweep resumes, a killed cluster worker loses nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvm_policy.sweep import Job, run_jobs

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")


# ---- jobs (module-level, so that Ray workers import them by reference) -----------------------------------------
def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message + "\nsecond line, not shown")


def die_once(marker: str) -> str:
    """Kills its own process on the first try (as the OOM killer or a lost node would)."""
    if not Path(marker).exists():
        Path(marker).write_text("tried")
        os.kill(os.getpid(), signal.SIGKILL)
    return "second try"


def listening_sockets(_: object) -> str:
    return subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_serial_sweep_reports_a_failure_and_runs_the_rest(tmp_path):
    jobs = [Job("a", square, 3), Job("b", fail, "bad option"), Job("c", square, 4)]
    outcomes = run_jobs(jobs, tmp_path / "sweep.jsonl", use_ray=False)
    assert outcomes["a"].result == 9 and outcomes["c"].result == 16
    assert outcomes["b"].error == "ValueError: bad option" and outcomes["b"].result is None
    events = _events(tmp_path / "sweep.jsonl")
    assert [e["event"] for e in events] == ["sweep"] + ["start", "end"] * 3
    ends = {e["run"]: e for e in events if e["event"] == "end"}
    assert ends["b"]["outcome"] == "failed" and "Traceback" in ends["b"]["traceback"] and ends["a"]["outcome"] == "ok"


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


@pytest.mark.slow  # starts Ray (about 17 s): the default run stays under 5 minutes
def test_ray_sweep_retries_a_dead_worker_reports_a_failure_and_listens_on_loopback_only(tmp_path, monkeypatch):
    """Embedded Ray: a job whose worker is killed is retried, a job that raises is reported, and (``ss -ltnp``
    while it runs) every socket this process tree listens on is a loopback one."""
    pytest.importorskip("ray")
    import ray

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)  # run_jobs must set it itself
    marker = tmp_path / "tried"
    jobs = [
        Job("square", square, 5),
        Job("fail", fail, "diverged"),
        Job("die-once", die_once, str(marker)),
        Job("sockets", listening_sockets, None),
    ]
    listening: list[str] = []

    def check(job, outcome):
        if job.key == "sockets":  # read while the instance runs: the processes are still there
            mine = _descendants(os.getpid())
            for line in outcome.result.splitlines()[1:]:
                if {int(p) for p in re.findall(r"pid=(\d+)", line)} & mine:
                    listening.append(line.split()[3])
        return None

    log = tmp_path / "sweep.jsonl"
    outcomes = run_jobs(jobs, log, use_ray=True, cpus_per_job=1, retries=2, on_result=check)
    assert not ray.is_initialized()  # the embedded instance is shut down
    assert outcomes["square"].result == 25
    assert outcomes["fail"].error == "ValueError: diverged"
    assert outcomes["die-once"].result == "second try" and outcomes["die-once"].error is None
    starts = [e["run"] for e in _events(log) if e["event"] == "start"]
    ends = [e["run"] for e in _events(log) if e["event"] == "end"]
    assert starts.count("die-once") == 2 and sorted(ends) == sorted(j.key for j in jobs)
    assert len(listening) >= 3  # the driver, the GCS, the raylet, the workers
    assert all(address.startswith(LOOPBACK) for address in listening), listening


# ---- compare_baselines' grid ---------------------------------------------------------------------------------
def _compare(tmp_path: Path, name: str, *extra: str, wait: bool = True, env: dict | None = None):
    demos = tmp_path / "demos"
    if not demos.exists():
        from envs.collect import collect

        collect(demos, episodes=100, seed=0, task="multigoal")
    args = [sys.executable, str(ROOT / "scripts/compare_baselines.py"), "--demos", str(demos)]
    args += ["--runs", str(tmp_path / name / "runs"), "--out", str(tmp_path / name / "out"), "--device", "cpu"]
    args += ["--policies", "gmm", "flow", "--seeds", "0", "1", "--episodes", "100", "--steps", "400"]
    args += ["--eval-every", "100", *extra]
    environ = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **(env or {}))
    proc = subprocess.Popen(args, cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        return out
    return proc


def _results(tmp_path: Path, name: str) -> list[dict]:
    drop = {"train_seconds", "eval_seconds", "run"}
    rows = json.loads((tmp_path / name / "out" / "results.json").read_text())
    return [json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True) for r in rows]


@pytest.mark.slow  # about 2 minutes: a reference sweep, an interrupted one, a two-node cluster with a killed worker
def test_interrupted_sweep_resumes_and_a_killed_cluster_worker_loses_nothing(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the test cluster stays on loopback
    from ray.cluster_utils import Cluster

    _compare(tmp_path, "reference", "--no-ray")
    reference = _results(tmp_path, "reference")

    # An interrupted sweep: the whole process killed once a run has a checkpoint but no result.
    proc = _compare(tmp_path, "resumed", "--no-ray", wait=False)
    run = tmp_path / "resumed" / "runs" / "gmm-seed0"
    while not (run / "latest" / "train_state.json").exists() or (run / "metrics.json").exists():
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    out = _compare(tmp_path, "resumed", "--no-ray")
    assert re.search(r"/gmm-seed0 \(resumed", out), out
    assert _results(tmp_path, "resumed") == reference

    # A two-node cluster on loopback; one worker killed in the middle of a run.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        proc = _compare(tmp_path, "cluster", "--address", cluster.address, wait=False)
        log = tmp_path / "cluster" / "out" / "sweep.jsonl"
        victim = None
        while victim is None:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            starts = [e for e in (_events(log) if log.exists() else []) if e["event"] == "start"]
            for e in starts:
                folder = tmp_path / "cluster" / "runs" / e["run"].split("/")[-1]
                if (folder / "log.jsonl").exists() and not (folder / "metrics.json").exists():
                    victim = e
                    break
            time.sleep(0.01)
        os.kill(victim["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    finally:
        cluster.shutdown()
    events = _events(log)
    ends = [e["run"] for e in events if e["event"] == "end"]
    starts = [e["run"] for e in events if e["event"] == "start"]
    assert sorted(ends) == sorted(set(ends)) and len(ends) == 4  # every run finished exactly once
    assert starts.count(victim["run"]) == 2 and all(starts.count(r) == 1 for r in ends if r != victim["run"])
    assert len({e["node"] for e in events if e["event"] == "start"}) == 2  # both nodes ran something
    assert _results(tmp_path, "cluster") == reference


def test_compare_reports_a_failed_run_and_writes_the_others(tmp_path, monkeypatch):
    """One row's training fails for its own reason: the other row's tables are written, the error names the run,
    and the command fails at the end (in process, without Ray)."""
    from envs.collect import collect
    from lvm_policy import benchmark
    from lvm_policy.errors import TrainingDivergedError
    from tests.test_tasks import _compare_module

    collect(tmp_path / "demos", episodes=60, seed=0, task="multigoal")
    module = _compare_module()
    execute = benchmark.execute

    def diverging_flow(spec):
        if spec.row == "flow":
            raise TrainingDivergedError("loss became nan at step 3")
        return execute(spec)

    monkeypatch.setattr(benchmark, "execute", diverging_flow)
    args = module.Args(
        demos=str(tmp_path / "demos"),
        policies=["gmm", "flow"],
        seeds=[0],
        steps=20,
        episodes=20,
        runs=tmp_path / "runs",
        out=tmp_path / "out",
        device="cpu",
        ray=False,
    )
    with pytest.raises(module.SweepFailed, match=r"1 of 2 runs failed \(out/flow-seed0: TrainingDivergedError: loss"):
        module.main(args)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| gmm | sampled |" in table
    ends = [e for e in _events(tmp_path / "out" / "sweep.jsonl") if e["event"] == "end"]
    assert {e["run"]: e["outcome"] for e in ends} == {"out/gmm-seed0": "ok", "out/flow-seed0": "failed"}


def test_a_cached_evaluation_takes_the_row_name_it_is_asked_under(tmp_path, capsys):
    """A finished run asked for under another row name that means the same options (a default spelled out) is
    reused with its cached evaluation, and its records carry the row asked for."""
    from envs.collect import collect
    from tests.test_tasks import _compare_module

    collect(tmp_path / "demos", episodes=60, seed=0, task="multigoal")
    module = _compare_module()

    def compare(row: str) -> list[dict]:
        common = dict(demos=str(tmp_path / "demos"), seeds=[0], steps=20, episodes=20, device="cpu", ray=False)
        module.main(module.Args(policies=[row], runs=tmp_path / "runs", out=tmp_path / "out", **common))
        return json.loads((tmp_path / "out" / "results.json").read_text())

    assert {r["policy"] for r in compare("gmm")} == {"gmm"}
    (tmp_path / "runs" / "gmm-seed0").rename(tmp_path / "runs" / "gmm-num_components5-seed0")
    capsys.readouterr()
    records = compare("gmm:num_components=5")
    assert "evaluation cached" in capsys.readouterr().out
    assert {r["policy"] for r in records} == {"gmm:num_components=5"}


def test_a_seed_is_evaluated_once_whether_or_not_it_draws_the_figure(tmp_path, monkeypatch):
    """Only a grid's first seed draws the figure's rollout paths: a seed evaluated without them in one sweep and
    asked for as the first seed of another keeps its cached records and draws only its panels."""
    from envs.collect import collect
    from lvm_policy import benchmark
    from tests.test_tasks import _compare_module

    collect(tmp_path / "demos", episodes=60, seed=0, task="multigoal")
    module = _compare_module()
    evaluated: list[int] = []
    evaluate_records = benchmark._evaluate_records
    monkeypatch.setattr(
        benchmark,
        "_evaluate_records",
        lambda spec, loaded: evaluated.append(spec.seed) or evaluate_records(spec, loaded),
    )

    def compare(seeds: list[int]) -> dict[int, list[dict]]:
        common = dict(demos=str(tmp_path / "demos"), policies=["gmm"], steps=20, episodes=20, device="cpu", ray=False)
        module.main(module.Args(seeds=seeds, runs=tmp_path / "runs", out=tmp_path / "out", **common))
        records = json.loads((tmp_path / "out" / "results.json").read_text())
        return {s: [r for r in records if r["seed"] == s] for s in seeds}

    both = compare([0, 1])
    assert sorted(evaluated) == [0, 1] and not (tmp_path / "runs" / "gmm-seed1" / "panel.npz").exists()
    alone = compare([1])  # seed 1 now draws the figure: its panels are drawn, its records reused
    assert sorted(evaluated) == [0, 1] and (tmp_path / "runs" / "gmm-seed1" / "panel.npz").is_file()
    assert alone[1] == both[1]
    compare([0, 1])
    assert sorted(evaluated) == [0, 1]
