"""Train (or reuse) every policy class over several seeds on the same demonstrations and compare them.

    python scripts/compare_baselines.py                        # TreeAvoid: every row x 3 seeds -> results/tree_avoid/
    python scripts/compare_baselines.py --task slalom          # or slalom_coupled, multigoal
    python scripts/compare_baselines.py --task maze2           # or maze3: MuJoCo PointMaze, 1,000 episodes per run
    python scripts/compare_baselines.py --task all             # every task, then results/summary.md
    python scripts/compare_baselines.py --seeds 0 --policies lvm gmm --steps 500 --out /tmp/cmp
    python scripts/compare_baselines.py --demos my-dataset-v0 --out results/mine   # any dataset
    python scripts/compare_baselines.py --summary-only          # rewrite results/summary.md from what is there
    python scripts/compare_baselines.py --policies bet:num_bins=16 bet:num_bins=64 --seeds 0 --out results/bet_bins
    python scripts/compare_baselines.py --task all --address auto   # on a running Ray cluster (README)

The grid (tasks x rows x seeds) runs as Ray tasks when Ray is installed: an embedded instance on loopback by
default (two single-thread runs at once on 2 cores), or a cluster with ``--address``; ``--no-ray`` runs them one
after another in this process. One progress line; ``<out>/sweep.jsonl`` records each run's start and end.

For each task (its default demonstrations, collected when missing) writes ``results/<task>/results.md`` (mean
and spread over seeds of every metric, both acting modes, training time), ``results.json`` (every run's metrics)
and ``rollouts.png`` (demonstrations and each class's rollouts), then ``results/summary.md``: class x task from
every task's results.json present. The run folders are the source of truth (``lvm_policy/benchmark.py``): a
finished run is reused only when its stored config equals the one asked for (so a changed default retrains), an
interrupted one resumes from its latest checkpoint, and evaluations are kept beside the weights. A run that fails
is reported with its error while the others go on; the command then exits non-zero.
"""

from __future__ import annotations

import json
import math
import sys
import time
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import envs  # noqa: E402,F401  (registers the package's tasks)
from envs.collect import default_demos  # noqa: E402
from lvm_policy import benchmark  # noqa: E402
from lvm_policy.cli import run_main  # noqa: E402
from lvm_policy.errors import ConfigError, LvmPolicyError  # noqa: E402
from lvm_policy.sweep import Job, Outcome, run_jobs  # noqa: E402
from lvm_policy.train import TrainConfig, config_to_json  # noqa: E402

COLUMNS = [  # (metric key, header, format)
    ("success_rate", "success", "{:.3f}"),
    ("mode_tv", "mode TV", "{:.3f}"),
    ("modes_covered", "modes covered", "{:.1f}"),
    ("mode_calibration_error", "calibration err", "{:.3f}"),
    ("switches_per_episode", "switches/ep", "{:.3f}"),
    ("nll", "held-out NLL", "{:.2f}"),
    ("outcome_distance", "outcome dist", "{:.4f}"),
    ("train_seconds", "train s", "{:.0f}"),
]
HEADLINE = "lvm"  # the package's own class: its rows come first in every table


def registry_rows() -> dict[str, tuple[str, dict]]:
    """Table rows from the registry: each class's ``benchmark_rows`` (row name -> changed options), or one row
    with its defaults; a new class file brings its rows with it."""
    from lvm_policy.policies import CONFIG_CLASSES, policy_class

    rows: dict[str, tuple[str, dict]] = {}
    for cls in sorted(CONFIG_CLASSES, key=lambda name: name != HEADLINE):
        declared = policy_class(cls).benchmark_rows
        rows.update({row: (cls, dict(options)) for row, options in (declared or {cls: {}}).items()})
    return rows


# Table rows: a class with its default options, or a named variant of one.
ROWS = registry_rows()
DEFAULT_ROWS = list(ROWS)
# Ablations: rows that only --policies asks for.
ROWS["lvm-episode-beta1"] = ("lvm", {**ROWS["lvm-episode"][1], "beta": 1.0})  # the true ELBO (default: 0.2)
ROWS["lvm-chunk"] = ("lvm", {"latent_scope": "chunk"})  # the default's chunks without the episode latent


def row_spec(name: str) -> tuple[str, dict]:
    """A row's class and options: a name of ROWS, or ``ROW:option=value[,option=value]`` (e.g. ``bet:num_bins=16``,
    ``lvm-episode:beta=0.05``), the row's options with some replaced. Values take the option's type."""
    from lvm_policy.policies import policy_class

    base, _, extra = name.partition(":")
    if base not in ROWS:
        raise ConfigError(f"unknown row {base!r} in --policies; choose from {', '.join(ROWS)} (or ROW:option=value)")
    cls, options = ROWS[base]
    if not extra:
        return cls, options
    config_class = policy_class(cls).config_class
    defaults = {f.name: f.default for f in fields(config_class)}
    hints = typing.get_type_hints(config_class)
    options = dict(options)
    for item in extra.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"--policies {name!r}: {item!r} is not option=value with an option of {cls}")
        kind = type(options.get(key, defaults[key]))
        if kind is type(None):  # an option that defaults to None: the type its annotation names beside None
            kind = next(t for t in typing.get_args(hints[key]) if t is not type(None))
        try:
            if kind is bool and value.lower() not in ("true", "false"):
                raise ValueError
            if value.lower() == "none" and type(None) in typing.get_args(hints[key]):
                options[key] = None
            elif typing.get_origin(kind) is typing.Literal:  # one of the names it lists
                if value not in typing.get_args(kind):
                    choices = ", ".join(map(str, typing.get_args(kind)))
                    raise ConfigError(f"--policies {name!r}: {key} takes one of {choices}, got {value!r}")
                options[key] = value
            else:
                options[key] = value.lower() == "true" if kind is bool else kind(value)
        except ValueError:
            raise ConfigError(f"--policies {name!r}: {key} takes a {kind.__name__}, got {value!r}") from None
    return cls, options


def run_name(name: str) -> str:
    """The run folder's name for a row (``bet:num_bins=16`` -> ``bet-num_bins16``)."""
    return name.replace(":", "-").replace("=", "").replace(",", "-")


@dataclass(frozen=True)
class Benchmark:
    """A benchmark task: its default demonstrations and how much evaluation its simulator affords."""

    collect_task: str
    variant: str = "expert"
    expert_options: dict = field(default_factory=dict)
    episodes: int = 10_000  # evaluation episodes per run and acting mode
    train_options: dict = field(default_factory=dict)  # TrainConfig overrides (periodic evaluation size)
    paths: bool = True  # the figure of rollout paths (a pixel task's observations hold no positions to draw)
    in_all: bool = True  # part of --task all (the pixel tasks are timed on their own)


# The MuJoCo mazes step through gymnasium's vector env, about 30 times slower than the torch twins on 2 cores:
# 1,000 evaluation episodes per run, smaller periodic evaluations during training, and the sync vector env
# (2.5 times the async one's steps/s with 2 cores: benchmarks/speed.py --tables maze).
MAZE_TRAINING = {"eval_every": 2000, "eval_episodes": 200, "final_eval_episodes": 200, "vectorization": "sync"}
TASKS = {
    "tree_avoid": Benchmark("tree_avoid"),
    "slalom": Benchmark("slalom", expert_options={"coupling": "independent"}),
    "slalom_coupled": Benchmark("slalom", "coupled", {"coupling": "same"}),
    "multigoal": Benchmark("multigoal"),
    "maze2": Benchmark("maze2", episodes=1000, train_options=MAZE_TRAINING),
    "maze3": Benchmark("maze3", episodes=1000, train_options=MAZE_TRAINING),
    # the driving tasks through a 32 x 32 camera (envs/pixels.py)
    "tree_avoid_pixels": Benchmark("tree_avoid_pixels", paths=False, in_all=False),
    "slalom_pixels": Benchmark("slalom_pixels", "coupled", {"coupling": "same"}, paths=False, in_all=False),
}


@dataclass
class Args:
    task: Literal[
        "tree_avoid",
        "slalom",
        "slalom_coupled",
        "multigoal",
        "maze2",
        "maze3",
        "tree_avoid_pixels",
        "slalom_pixels",
        "all",
    ] = "tree_avoid"
    """benchmark task (its default demonstrations), or all of them but the pixel ones (slalom_pixels: coupled sides)"""
    policies: list[str] = field(default_factory=lambda: list(DEFAULT_ROWS))
    """rows to compare: a row of a class (README, "The policy classes": e.g. lvm, lvm-episode, diffusion-dp, act-ensemble),
    the ablation lvm-episode-beta1 (--lvm.beta 1), or any of them with options changed: ROW:option=value[,...]"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """training seeds"""
    steps: int | None = None
    """gradient steps (default: train_bc's default)"""
    lr: float | None = None
    """learning rate of every run (default: train_bc's default)"""
    demos: str | None = None
    """a Minari dataset (folder or dataset id) instead of the task's default demonstrations"""
    runs: Path = Path("runs/compare")
    """where the run folders go (<runs>/<task>/<policy>-seed<seed>); a finished run with the same config is reused"""
    out: Path = Path("results")
    """results/<task>/ get results.md, results.json and rollouts.png; results/ gets summary.md"""
    episodes: int | None = None
    """evaluation episodes per run and acting mode (default: 10,000; 1,000 on the MuJoCo mazes)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """device of training and rollouts"""
    summary_only: bool = False
    """only rewrite <out>/summary.md from the results.json files below <out>"""
    ray: bool = True
    """run the grid as Ray tasks (an embedded instance on loopback, or --address); --no-ray: one after another"""
    address: str | None = None
    """join a running Ray cluster ("auto" or HOST:PORT) instead of starting one; --runs and --out must then be
    storage every node sees"""
    cpus_per_run: int = 1
    """CPUs (and torch threads) of each run: two single-thread runs at once use 2 cores best"""
    parallel: int | None = None
    """runs at once on the embedded Ray instance (default: the machine's cores / --cpus-per-run)"""
    gpus_per_run: float = 0.25
    """share of a GPU per run under --device cuda (several runs share one GPU)"""
    eval_every: int | None = None
    """steps between periodic evaluations during training (default: the task's, else train_bc's)"""


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


def reusable(run: Path, cfg: TrainConfig) -> bool:
    """Whether ``run`` finished with the options ``cfg`` asks for (so that a changed default retrains)."""
    return benchmark.reusable(run, cfg)


class SweepFailed(LvmPolicyError):
    """Some runs failed for their own reasons; the others finished and are in the tables."""


@dataclass
class Comparison:
    """One task's comparison: its dataset, where its runs and tables go, and one RunSpec per row x seed."""

    label: str  # the task, or the output folder's name for --demos
    demos: str
    runs: Path
    out: Path
    episodes: int
    specs: list[benchmark.RunSpec]
    paths: bool = True  # draw rollouts.png


def plan(args: Args, label: str, demos_ref: str, runs: Path, out: Path, bench: Benchmark) -> Comparison:
    """Every row x seed of one dataset as a RunSpec; each config is checked here, before anything trains."""
    episodes = args.episodes or bench.episodes
    base = replace(TrainConfig(demos=demos_ref, device=args.device, progress=False), **bench.train_options)
    base = replace(base, final_eval_episodes=episodes)  # the training's final evaluation is the sampled one
    if args.steps is not None:
        base = replace(base, steps=args.steps)
    if args.lr is not None:
        base = replace(base, lr=args.lr)
    if args.eval_every is not None:
        base = replace(base, eval_every=args.eval_every)
    specs = []
    for name in args.policies:
        cls, options = row_spec(name)
        for seed in args.seeds:
            cfg = replace(base, policy=cls, seed=seed, out=(runs / f"{run_name(name)}-seed{seed}").resolve())
            cfg = replace(cfg, **{cls: replace(getattr(cfg, cls), **options)})
            cfg.validate()
            panel = 300 if seed == args.seeds[0] and bench.paths else 0
            specs.append(
                benchmark.RunSpec(
                    row=name,
                    seed=seed,
                    config=json.loads(json.dumps(config_to_json(cfg))),
                    episodes=episodes,
                    panel_paths=panel,
                    low_noise_panel=panel > 0 and cls == "gaussian",  # the mean action's averaging, drawn
                )
            )
    return Comparison(label, demos_ref, runs, out, episodes, specs, bench.paths)


def main(args: Args) -> None:
    if args.summary_only:
        write_summary(args.out)
        return
    if not args.seeds or not args.policies:
        raise ConfigError("--seeds and --policies need at least one value each")
    for name in args.policies:
        row_spec(name)  # an unknown row or option fails here, before any training
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    if args.cpus_per_run < 1 or not 0 < args.gpus_per_run <= 1:
        raise ConfigError("--cpus-per-run must be at least 1 and --gpus-per-run in (0, 1]")
    if args.parallel is not None and (args.parallel < 1 or args.address is not None):
        raise ConfigError("--parallel must be at least 1, and applies to the embedded Ray instance (not --address)")
    if args.address is not None and not args.ray:
        raise ConfigError("--address joins a Ray cluster; it cannot be combined with --no-ray")
    if args.demos is not None:
        demos = str(Path(args.demos).resolve()) if Path(args.demos).exists() else args.demos
        comparisons = [plan(args, args.out.name or "demos", demos, args.runs, args.out, Benchmark(""))]
    else:
        comparisons = []
        for task in [t for t in TASKS if TASKS[t].in_all] if args.task == "all" else [args.task]:
            bench = TASKS[task]
            demos = default_demos(bench.collect_task, bench.variant)
            if not demos.exists():
                from envs.collect import collect

                try:
                    collect(demos, task=bench.collect_task, variant=bench.variant, **bench.expert_options)
                except ImportError as exc:  # a maze without its simulator installed
                    raise ConfigError(str(exc)) from None
            comparisons.append(plan(args, task, str(demos.resolve()), args.runs / task, args.out / task, bench))

    from lvm_policy.evaluate import resolve_device

    cuda = resolve_device(args.device).type == "cuda"
    jobs = [Job(f"{c.label}/{s.run.name}", benchmark.execute, s) for c in comparisons for s in c.specs]
    t0 = time.perf_counter()
    outcomes = run_jobs(
        jobs,
        args.out / "sweep.jsonl",
        use_ray=args.ray,
        address=args.address,
        cpus_per_job=args.cpus_per_run,
        gpus_per_job=args.gpus_per_run if cuda else 0.0,
        parallel=args.parallel,
        on_result=_run_line,
    )
    print(f"{len(jobs)} runs in {time.perf_counter() - t0:.0f} s of wall time")
    for c in comparisons:
        write_tables(args, c, [outcomes[f"{c.label}/{s.run.name}"] for s in c.specs])
    if args.demos is None:
        write_summary(args.out)
    failed = [o for o in outcomes.values() if o.error is not None]
    if failed:
        lines = "; ".join(f"{o.key}: {o.error}" for o in failed)
        raise SweepFailed(f"{len(failed)} of {len(jobs)} runs failed ({lines}); see {args.out / 'sweep.jsonl'}")


def _run_line(job: Job, outcome: Outcome) -> str:
    sampled, low_noise = outcome.result["records"]
    how = outcome.result["training"] + ("" if outcome.result["evaluation"] == "computed" else ", evaluation cached")
    return (
        f"{job.key} ({how}, {outcome.seconds:.0f} s): success {sampled.get('success_rate', float('nan')):.4f} "
        f"(low-noise {low_noise.get('success_rate', float('nan')):.4f}), mode TV {sampled.get('mode_tv', float('nan')):.3f}"
    )


SUMMARY = [("success_rate", "success", "{:.3f}"), ("mode_tv", "mode TV", "{:.3f}"), ("nll", "NLL", "{:.2f}")]


def write_summary(out: Path) -> None:
    """results/summary.md: per class (sampled actions) and task, mean over seeds, from every results.json below
    ``out``. A comparison in a folder named like a task (``results/modern/slalom``) fills that task's column with
    the classes it adds; a class in several of them is taken from the one with the most seeds (on a tie, from
    ``results/<task>`` itself). Other folders get their own column.

    A folder's ``superseded.json`` ({row: why}) names rows measured under an earlier definition of the row (a
    default changed since): they are used only where no other folder has the row, and are then marked with a
    dagger."""
    # results/<task> before results/<x>/<task>, then alphabetically
    found = sorted((f.parent.relative_to(out) for f in out.glob("**/results.json")), key=lambda d: (len(d.parts), d))
    sources: dict[str, list[Path]] = {}
    for folder in found:
        column = folder.name if folder.name in TASKS else str(folder)
        sources.setdefault(column, []).append(folder)
    tasks = [t for t in TASKS if t in sources] + [t for t in sources if t not in TASKS]
    records: dict[str, list[dict]] = {}
    dated: set[tuple[str, str]] = set()  # (task, row) shown from a superseded measurement
    for t in tasks:
        best: dict[str, tuple[tuple[bool, int], list[dict]]] = {}  # policy -> ((current, seeds), its rows)
        for folder in sources[t]:
            rows = json.loads((out / folder / "results.json").read_text())
            marker = out / folder / "superseded.json"
            superseded = json.loads(marker.read_text()) if marker.is_file() else {}
            for p in dict.fromkeys(r["policy"] for r in rows):
                mine = [r for r in rows if r["policy"] == p]
                rank = (p not in superseded, len({r.get("seed") for r in mine}))
                if p not in best or rank > best[p][0]:  # ties: the shallower folder, read first
                    best[p] = (rank, mine)
        records[t] = [r for _, mine in best.values() for r in mine]
        dated |= {(t, p) for p, ((current, _), _) in best.items() if not current}
    # the registry's order (the package's own lvm first); ablation rows (lvm-episode-beta1, ROW:option=value) stay
    # in their own results.md
    seen = {r["policy"] for t in tasks for r in records[t]}
    policies = [p for p in DEFAULT_ROWS if p in seen]
    head = " | ".join(f"{t}: success / mode TV / NLL / train s" for t in tasks)
    lines = [
        "Sampled actions; mean over the seeds of each column's results.json files (10,000 evaluation episodes per "
        "run, 1,000 on the mazes; see each folder's results.md for its seeds and spread).",
        "",
        f"| policy | {head} |",
        "|---|" + "---|" * len(tasks),
    ]
    for p in policies:
        cells = []
        for t in tasks:
            rows = [r for r in records[t] if r["policy"] == p and not r["deterministic"]]
            if not rows:
                cells.append("–")
                continue
            vals = [fmt.format(_mean_std([r.get(k) for r in rows])[0]) for k, _, fmt in SUMMARY]
            vals = ["–" if v == "nan" else v for v in vals]  # e.g. bet's NLL: it has no density
            vals.append(f"{_mean_std([r.get('train_seconds') for r in rows])[0]:.0f}")
            seeds = len({r.get("seed") for r in rows})
            cells.append(" / ".join(vals) + ("" if seeds > 1 else " (1 seed)") + (" †" if (t, p) in dated else ""))
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    if dated:
        lines += ["", "† measured under an earlier definition of the row (the folder's superseded.json says which)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    write_times(out, tasks, records)


def run_seconds(rows: list[dict]) -> float:
    """Recorded seconds of one run: its training plus its evaluations (both acting modes; an evaluation that
    was reused for the other mode counts once)."""
    return (rows[0].get("train_seconds") or 0.0) + eval_seconds(rows)


def eval_seconds(rows: list[dict]) -> float:
    """Recorded seconds of one run's final evaluations (both acting modes; one reused for the other counts once)."""
    return sum({round(r.get("eval_seconds") or 0.0, 6) for r in rows})


def write_times(out: Path, tasks: list[str], records: dict[str, list[dict]]) -> None:
    """results/times.md: the recorded seconds per run (training + evaluations) of every default row on every
    benchmark task, mean over seeds, and what the whole grid (every default row x task x 3 seeds) adds up to,
    with the cells that have no measured run counted."""
    tasks = [t for t in tasks if t in TASKS]
    lines = [
        "Seconds per run (training + evaluations as recorded in results.json), mean over the seeds measured; the "
        "runs shared the 2 cores with other jobs, so these are upper bounds of the time alone.",
        "",
        "| row | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    total, missing = 0.0, 0
    per_task, evaluating = dict.fromkeys(tasks, 0.0), dict.fromkeys(tasks, 0.0)  # 3 seeds: all, final evaluations
    for row in DEFAULT_ROWS:
        cells = []
        for t in tasks:
            runs: dict[int, list[dict]] = {}
            for r in records.get(t, []):
                if r["policy"] == row:
                    runs.setdefault(r.get("seed"), []).append(r)
            if not runs:
                cells.append("–")
                missing += 3
                continue
            mean = sum(run_seconds(rows) for rows in runs.values()) / len(runs)
            cells.append(f"{mean:.0f}")
            total += 3 * mean
            per_task[t] += 3 * mean
            evaluating[t] += 3 * sum(eval_seconds(rows) for rows in runs.values()) / len(runs)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("| **3 seeds, every row** | " + " | ".join(f"**{per_task[t]:.0f}**" for t in tasks) + " |")
    lines.append("| of which final evaluations | " + " | ".join(f"{evaluating[t]:.0f}" for t in tasks) + " |")
    cells = len(DEFAULT_ROWS) * len(tasks) * 3
    in_all = [t for t in tasks if TASKS[t].in_all]
    grid, grid_eval = sum(per_task[t] for t in in_all), sum(evaluating[t] for t in in_all)
    lines += [
        "",
        f"The grid of {len(DEFAULT_ROWS)} default rows x {len(tasks)} tasks x 3 seeds is {cells} runs; the "
        f"{cells - missing} with a measured row add up to {total:.0f} s ({total / 3600:.1f} h) of run time, "
        f"{missing} have none yet. `--task all` ({', '.join(in_all)}) adds up to {grid:.0f} s ({grid / 3600:.1f} h), "
        f"of which the final evaluations (10,000 episodes per acting mode, 1,000 on the mazes) take {grid_eval:.0f} s: "
        f"with two runs at a time on the 2 cores, {grid_eval / 7200:.1f} h of wall time before any training.",
    ]
    (out / "times.md").write_text("\n".join(lines) + "\n")


def write_tables(args: Args, c: Comparison, outcomes: list[Outcome]) -> None:
    """results.md, results.json and rollouts.png of one comparison, from the runs that finished."""
    from gymnasium.envs.registration import EnvSpec

    from lvm_policy.data import load_demonstrations
    from lvm_policy.evaluate import resolve_device
    from lvm_policy.plots import demo_panel, env_figure, plot_paths

    finished = [(s, o) for s, o in zip(c.specs, outcomes) if o.error is None]
    if not finished:
        return
    records = [r for _, o in finished for r in o.result["records"]]
    recorded = json.loads((finished[0][0].run / "config.json").read_text())["environment"]
    env = EnvSpec.from_json(recorded["spec"]) if recorded["spec"] else recorded["id"]
    names, figure = env_figure(env)
    panels = [demo_panel(load_demonstrations(c.demos))] if c.paths else []
    panels += [p for _, o in finished for p in o.result["panels"]]
    device = resolve_device(args.device)
    out, episodes, demos_ref = c.out, c.episodes, c.demos
    reference = json.loads((finished[0][0].run / "demo_stats.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1))
    demo_shares = records[0].get("demo_mode_shares", [])
    shares = ", ".join(f"{n} {s:.3f}" for n, s in zip(names, demo_shares))
    env_id = env.id if hasattr(env, "id") else env
    floor = ""
    if demo_shares and "episodes" in (reference or {}):
        from lvm_policy.metrics import tv_noise_floor

        mean, p95 = tv_noise_floor(demo_shares, reference["episodes"], episodes, draws=500)
        floor = (
            f" A perfect policy would show a mode TV of {mean:.3f} on average (95th percentile {p95:.3f}) by chance: "
            f"{reference['episodes']} training demonstrations against {episodes} evaluation episodes."
        )
    lines = [
        f"Environment {env_id}; demonstrations {Path(demos_ref).parent.name}/{Path(demos_ref).name} (mode shares {shares or 'not recorded'}). "
        f"{episodes} evaluation episodes per run, the same seeded episodes for every policy; mean ± standard "
        f"deviation over seeds {args.seeds}; device {device}.{floor}",
        "",
        "| policy | acting | " + " | ".join(h for _, h, _ in COLUMNS) + " | mode shares |",
        "|---|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name in args.policies:
        for deterministic in (False, True):
            rows = [r for r in records if r["policy"] == name and r["deterministic"] == deterministic]
            cells = []
            for key, _, fmt in COLUMNS:
                m, s = _mean_std([r.get(key) for r in rows])
                cells.append(f"{fmt.format(m)} ± {fmt.format(s)}" if len(rows) > 1 else fmt.format(m))
            per_mode = [
                _mean_std([r["mode_shares"][k] for r in rows if "mode_shares" in r])[0] for k in range(len(names))
            ]
            cells.append(" / ".join(f"{v:.3f}" for v in per_mode))
            acting = "low-noise" if deterministic else "sampled"
            lines.append(f"| {name} | {acting} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if panels:
        plot_paths(panels, out / "rollouts.png", names, figure)
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(lambda: main(tyro.cli(Args)))
