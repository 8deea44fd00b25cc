"""One run of a benchmark grid: train, resume or reuse a run folder, then evaluate it in both acting modes.

The run folder is the source of truth, so :func:`execute` may be called again on the same folder at any point
(a resumed sweep, a retried task after its worker died, a second machine of a cluster):

- a finished run whose stored config is the one asked for is reused; a changed option or default retrains;
- an unfinished run with the same config resumes from ``latest/`` (on the CPU it ends with the same weights as an
  uninterrupted run);
- its evaluation is kept in ``benchmark.json`` (and the figure's paths in ``panel.npz``) beside the weights,
  keyed by what decides it, and reused the same way.

The training's own final evaluation is the sampled-action evaluation when both use the same episodes, so a run
is evaluated twice (sampled and low-noise), not three times.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

import numpy as np

# Options that do not change what a run learns: two configs that differ only here describe the same run.
NOT_PART_OF_A_RUN = ("out", "resume", "progress", "json", "final_eval_episodes", "periodic_nll", "stop_when_perfect")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a stored config that decides what a run learns: without the options in NOT_PART_OF_A_RUN,
    without the option sections of the other policy classes, and with the class's options as they take effect
    (an option that defaults by context, such as the lvm's beta, compares by the value it stood for)."""
    from lvm_policy.policies import policy_class
    from lvm_policy.train import PolicyName

    classes = get_args(PolicyName)
    kept = {
        k: v
        for k, v in config.items()
        if k not in NOT_PART_OF_A_RUN and k != "environment" and (k not in classes or k == config["policy"])
    }
    name = config["policy"]
    if isinstance(kept.get(name), dict):
        kept[name] = asdict(policy_class(name).config_class(**kept[name]).effective())
    return kept


def same_run(run: Path, config: dict[str, Any]) -> bool:
    """Whether the config stored in ``run`` describes the run that ``config`` (a TrainConfig as JSON) asks for."""
    from lvm_policy.policies import policy_class
    from lvm_policy.train import PolicyName

    if not (run / "config.json").is_file():
        return False
    stored = json.loads((run / "config.json").read_text())
    wanted = identity(config)
    # An option added since the run was made did not exist then: the run behaved as its default does now, or as
    # its class's ``absent_means`` says where the new default changed what training does.
    classes = get_args(PolicyName)
    for key, value in wanted.items():
        if isinstance(value, dict) and isinstance(stored.get(key), dict):
            before = policy_class(key).config_class.absent_means if key in classes else {}
            stored[key] = {**value, **before, **stored[key]}
        elif key not in stored:
            stored[key] = value
    return identity(stored) == wanted


def reusable(run: Path, cfg) -> bool:
    """Whether ``run`` finished with the options the TrainConfig ``cfg`` asks for."""
    from lvm_policy.train import config_to_json

    return (run / "metrics.json").is_file() and same_run(run, json.loads(json.dumps(config_to_json(cfg))))


@dataclass(frozen=True)
class RunSpec:
    """What one cell of the grid asks for. Plain data, so that it travels to another process or machine."""

    row: str  # the table row, e.g. "lvm" or "bet:num_bins=16"
    seed: int
    config: dict[str, Any]  # the TrainConfig as JSON; its ``out`` is the run folder (absolute)
    episodes: int  # evaluation episodes per acting mode
    panel_paths: int = 0  # rollout paths kept for the comparison figure (0: none)
    low_noise_panel: bool = False  # a second panel with low-noise actions
    extra: dict[str, Any] = field(default_factory=dict)  # fields copied into every record (e.g. the task)

    @property
    def run(self) -> Path:
        return Path(self.config["out"])


def _evaluation_key(spec: RunSpec) -> dict[str, Any]:
    """What the cached evaluation records depend on (the training is checked apart, by ``_trained_stamp``)."""
    c = spec.config
    return dict(
        episodes=spec.episodes,
        num_envs=c["num_envs"],
        vectorization=c["vectorization"],
        max_episode_steps=c["max_episode_steps"],
    )


def _panel_key(spec: RunSpec) -> dict[str, Any]:
    """What the cached figure panels depend on, beside the evaluation key (only a grid's first seed draws them)."""
    return dict(panel_paths=spec.panel_paths, low_noise_panel=spec.low_noise_panel)


def train_or_reuse(spec: RunSpec) -> str:
    """Bring the run folder to a finished training; returns how: "reused", "resumed" or "trained"."""
    from lvm_policy.train import config_from_json, train

    run = spec.run
    same = same_run(run, spec.config)
    if same and (run / "metrics.json").is_file():
        return "reused"
    cfg = config_from_json(spec.config)
    if same and (run / "latest" / "train_state.json").is_file():
        train(replace(cfg, resume=run))  # the stored config, continued from its latest checkpoint
        return "resumed"
    if run.exists():
        shutil.rmtree(run)  # made with other options, or interrupted before its first checkpoint
    train(cfg)
    return "trained"


def execute(spec: RunSpec) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and evaluate it with sampled and low-noise actions.

    Returns ``{"records": [sampled, low_noise], "panels": [(title, paths, modes), ...], "training": how,
    "evaluation": "cached" | "computed"}``; every record holds the metrics plus policy (the row), seed,
    deterministic, train_seconds, eval_seconds and ``spec.extra``.
    """
    how = train_or_reuse(spec)
    run = spec.run
    key, panel_key, trained = _evaluation_key(spec), _panel_key(spec), _trained_stamp(run)
    cache = run / "benchmark.json"
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    # The records do not depend on the panels: a seed evaluated with its panels in one sweep and without them in
    # another is evaluated once. (Caches written before the panels had their own key held them in "key".)
    old_key = stored.get("key", {})
    stored_key = {k: v for k, v in old_key.items() if k not in panel_key}
    stored_panels = stored.get("panels", {k: v for k, v in old_key.items() if k in panel_key})
    if stored_key == key and stored.get("trained") == trained:
        # the same run may be asked for under another row name (an option spelled out that equals its default)
        records = [{**r, "policy": spec.row, **spec.extra} for r in stored["records"]]
        if not spec.panel_paths:
            return dict(records=records, panels=[], training=how, evaluation="cached")
        if stored_panels == panel_key and (run / "panel.npz").is_file():
            return dict(records=records, panels=_read_panels(run), training=how, evaluation="cached")
        panels = _draw_panels(spec, _loaded(spec))  # cached records, panels asked for now
        _write_panels(run, panels)
        cache.write_text(json.dumps(dict(key=key, panels=panel_key, trained=trained, records=stored["records"])))
        return dict(records=records, panels=panels, training=how, evaluation="cached")
    loaded = _loaded(spec)  # the policy and env, read once for the records and the panels
    records, panels = _evaluate_records(spec, loaded), _draw_panels(spec, loaded)
    if spec.panel_paths:
        _write_panels(run, panels)
    panels_stored = panel_key if spec.panel_paths else {}  # a panel.npz left from an earlier training is stale
    cache.write_text(json.dumps(dict(key=key, panels=panels_stored, trained=trained, records=records)))
    return dict(records=records, panels=panels, training=how, evaluation="computed")


def _trained_stamp(run: Path) -> str:
    """Identifies the training that produced best/ (a retrained run invalidates the cached evaluation)."""
    m = json.loads((run / "metrics.json").read_text())
    return f"{m.get('train_seconds')}:{m.get('steps')}:{m.get('seed')}"


def _loaded(spec: RunSpec) -> tuple[Any, Any, dict[str, Any], Any]:
    """The run's best/ policy, its recorded env, the rollout options and the device."""
    from gymnasium.envs.registration import EnvSpec

    from lvm_policy.evaluate import resolve_device
    from lvm_policy.policies import load_policy

    c, run = spec.config, spec.run
    device = resolve_device(c["device"])
    recorded = json.loads((run / "config.json").read_text())["environment"]
    env = EnvSpec.from_json(recorded["spec"]) if recorded["spec"] else recorded["id"]
    options = dict(num_envs=c["num_envs"], vectorization=c["vectorization"], max_episode_steps=c["max_episode_steps"])
    return load_policy(run, device), env, options, device


def _evaluate_records(spec: RunSpec, loaded: tuple) -> list[dict[str, Any]]:
    """The run's metrics with sampled and low-noise actions (the training's final evaluation reused where it is the
    same evaluation)."""
    from lvm_policy.evaluate import evaluate
    from lvm_policy.train import validation_split

    run = spec.run
    policy, env, options, device = loaded
    trained = json.loads((run / "metrics.json").read_text())
    reference, heldout = validation_split(run, device)
    common = dict(policy=spec.row, seed=spec.seed, train_seconds=trained["train_seconds"], **spec.extra)
    records: list[dict[str, Any]] = []
    for deterministic in (False, True):
        if deterministic and not policy.low_noise_differs:  # the same procedure: its result, not a rerun
            records.append(dict(records[-1], deterministic=True))
            continue
        if not deterministic and trained.get("episodes") == spec.episodes and "eval_seconds" in trained:
            # the training's final evaluation of best/: the same policy, episodes, seeds and options
            metrics = {k: v for k, v in trained.items() if k not in ("policy", "seed", "steps", "run", "train_seconds")}
        else:
            t = time.perf_counter()
            metrics = evaluate(policy, env, reference, heldout, spec.episodes, deterministic, device, **options)
            metrics["eval_seconds"] = time.perf_counter() - t
        records.append(dict(metrics, deterministic=deterministic, **common))
    return records


def _draw_panels(spec: RunSpec, loaded: tuple) -> list[tuple[str, list, list]]:
    """The rollout paths of the comparison's figure: ``spec.panel_paths`` episodes (none: no panels)."""
    from lvm_policy.evaluate import rollout
    from lvm_policy.plots import rollout_panel

    if not spec.panel_paths:
        return []
    policy, env, options, device = loaded
    panels = []
    for deterministic in (False, True) if spec.low_noise_panel else (False,):
        r = rollout(policy, env, spec.panel_paths, deterministic=deterministic, device=device,
                    record_paths=spec.panel_paths, **options)  # fmt: skip
        panels.append(rollout_panel(spec.row + (" (mean)" if deterministic else ""), r))
    return panels


def _write_panels(run: Path, panels: list[tuple[str, list, list]]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, (title, paths, modes) in enumerate(panels):
        arrays[f"{i}.title"] = np.array(title)
        arrays[f"{i}.modes"] = np.asarray(modes, dtype=np.int64)
        arrays.update({f"{i}.path{j}": np.asarray(p, dtype=np.float32) for j, p in enumerate(paths)})
    np.savez_compressed(run / "panel.npz", **arrays)


def _read_panels(run: Path) -> list[tuple[str, list, list]]:
    if not (run / "panel.npz").is_file():
        return []
    with np.load(run / "panel.npz") as z:
        panels = []
        for i in range(len([k for k in z.files if k.endswith(".title")])):
            n = len([k for k in z.files if k.startswith(f"{i}.path")])
            panels.append((str(z[f"{i}.title"]), [z[f"{i}.path{j}"] for j in range(n)], z[f"{i}.modes"].tolist()))
        return panels
