"""What running compare_baselines' grid through Ray costs and gains, on this machine. A benchmark, not a test.

    python benchmarks/sweep.py                                   # 4 runs of gmm on TreeAvoid, 2,000 steps
    python benchmarks/sweep.py --policies lvm-step --steps 1000 --repeats 1

The same grid (one row x ``--seeds``, fresh run folders each time) is run by ``scripts/compare_baselines.py``
three ways, each timed by the wall clock around the whole command:

- serial: ``--no-ray --cpus-per-run C`` (C = the machine's cores), runs one after another in the process;
- ray, one at a time: ``--cpus-per-run C``: the same work through an embedded Ray instance, so the difference is
  Ray's own cost (start-up, a worker process per run, results through the object store);
- ray, in parallel: ``--cpus-per-run 1``: as many single-thread runs at once as there are cores.

Prints a markdown table with the median over ``--repeats`` and the ratio to the serial time.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    policies: list[str] = field(default_factory=lambda: ["gmm"])
    """rows of the grid"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    """seeds of the grid (runs = rows x seeds)"""
    task: str = "tree_avoid"
    """benchmark task (its default demonstrations must exist: python scripts/collect_demos.py)"""
    steps: int = 2000
    """gradient steps per run"""
    episodes: int = 10_000
    """evaluation episodes per run and acting mode"""
    repeats: int = 3
    """repeats of each way (median reported)"""


def timed(args: Args, folder: Path, *extra: str) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "scripts/compare_baselines.py"), "--task", args.task, "--device", "cpu"]
    cmd += ["--policies", *args.policies, "--seeds", *map(str, args.seeds), "--steps", str(args.steps)]
    cmd += ["--episodes", str(args.episodes), "--runs", str(folder / "runs"), "--out", str(folder / "out"), *extra]
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(args: Args) -> None:
    cores = os.cpu_count() or 1
    ways = {
        f"serial (--no-ray, {cores} threads per run)": ("--no-ray", "--cpus-per-run", str(cores)),
        f"ray, one run at a time ({cores} threads per run)": ("--cpus-per-run", str(cores)),
        f"ray, {cores} single-thread runs at once": ("--cpus-per-run", "1"),
    }
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every way
            for way, extra in ways.items():
                seconds[way].append(timed(args, Path(tmp) / "grid", *extra))
    runs = len(args.policies) * len(args.seeds)
    base = statistics.median(seconds[next(iter(ways))])
    print(
        f"{runs} runs ({', '.join(args.policies)} on {args.task}, {args.steps} steps, {args.episodes} evaluation "
        f"episodes per acting mode), {cores} cores, wall seconds of the whole command, median of {args.repeats}\n"
    )
    print("| how | wall s | relative to serial | all repeats |")
    print("|---|---|---|---|")
    for way, values in seconds.items():
        m = statistics.median(values)
        print(f"| {way} | {m:.1f} | {m / base:.2f} | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
