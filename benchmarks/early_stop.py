"""What stopping a training once its periodic evaluations plateau would have done to finished runs. A benchmark,
not a test: it reads run folders and prints a table.

    python benchmarks/early_stop.py runs/                 # every run folder below runs/
    python benchmarks/early_stop.py runs/fill runs/cpd --patience 1 2 3

``train_bc.py`` keeps in best/ the first checkpoint with the highest periodic score (``evaluate.eval_score``) and
already stops at a perfect score (``--stop-when-perfect``). A plateau rule would also stop a run once ``patience``
periodic evaluations in a row have not beaten the best score so far. Each finished run's ``log.jsonl`` holds every
periodic score, so the rule can be replayed on it without training: the run would have stopped at that evaluation
and kept that best/, which is the full run's best/ exactly when no later evaluation beat it. Runs that stopped at a
perfect score are left out (no later evaluation could change their best/).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError  # noqa: E402


@dataclass
class Args:
    folders: tyro.conf.Positional[list[Path]]
    """folders searched for run folders (any folder below them with a log.jsonl)"""
    patience: list[int] = field(default_factory=lambda: [1, 2, 3])
    """periodic evaluations in a row without a new best after which the rule stops"""


@dataclass
class Replay:
    stopped: bool  # the rule would have stopped before the last evaluation
    same_best: bool  # ... and kept the full run's best/
    score_lost: float  # the full run's best score minus the one kept
    seconds_saved: float
    seconds: float  # the full run's training seconds at its last evaluation


def replay(scores: list[float], seconds: list[float], patience: int) -> Replay:
    """The plateau rule on one run's periodic scores and the training seconds at each."""
    best_full = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first of the highest, as best/
    best, since = 0, 0
    for i in range(1, len(scores) - 1):  # stopping at the last evaluation saves nothing
        if scores[i] > scores[best]:
            best, since = i, 0
        else:
            since += 1
        if since >= patience:
            return Replay(
                True, best == best_full, scores[best_full] - scores[best], seconds[-1] - seconds[i], seconds[-1]
            )
    return Replay(False, True, 0.0, 0.0, seconds[-1])


def periodic(log: Path) -> tuple[list[float], list[float], bool]:
    """(scores, training seconds, stopped at a perfect score) from a run's log.jsonl."""
    scores, seconds, perfect = [], [], False
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "eval":
            scores.append(record["score"])
            seconds.append(record["train_seconds"])
        perfect |= record.get("kind") == "stop"
    return scores, seconds, perfect


def main(args: Args) -> None:
    if not args.folders or any(p < 1 for p in args.patience):
        raise ConfigError("give at least one folder, and --patience values of at least 1")
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        raise ConfigError(f"not a folder: {', '.join(missing)}")
    logs = sorted(
        {log for f in args.folders for log in f.glob("**/log.jsonl") if (log.parent / "metrics.json").is_file()}
    )
    runs = [(log.parent, *periodic(log)) for log in logs]
    runs = [r for r in runs if len(r[1]) >= 3 and not r[3]]  # replayable: three evaluations, no perfect stop
    if not runs:
        raise ConfigError(
            "no finished run with three or more periodic evaluations (and no perfect stop) below these folders"
        )
    print(
        f"{len(runs)} finished runs below {', '.join(map(str, args.folders))} with three or more periodic evaluations"
    )
    print("| patience | would stop early | best/ kept | best/ changed | largest score lost | training time saved |")
    print("|---|---|---|---|---|---|")
    for patience in args.patience:
        replays = [replay(scores, seconds, patience) for _, scores, seconds, _ in runs]
        changed = [(r.score_lost, run) for r, (run, *_) in zip(replays, runs) if not r.same_best]
        lost = max(changed)[0] if changed else 0.0
        saved = sum(r.seconds_saved for r in replays) / sum(r.seconds for r in replays)
        print(
            f"| {patience} | {sum(r.stopped for r in replays)} | {sum(r.same_best for r in replays)} | {len(changed)} "
            f"| {lost:.3f} | {saved:.0%} |"
        )
        for score, run in sorted(changed, reverse=True)[:3]:
            print(f"|  | changed: {run} (score {score:.3f} lower) | | | | |")


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
