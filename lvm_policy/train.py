"""One training loop for every policy class: minibatches indexed on the device, ``policy.loss``, AdamW.

The environment comes from the dataset (the ``EnvSpec`` Minari recorded) or from ``--env``; when it cannot be
made, training still runs (validation NLL only) and says why once.

A run folder holds::

    config.json        the training config (every option, including the class's own) and the environment
                       (id, spec, observation and action spaces)
    demo_stats.json    what evaluation compares with: the demonstrations' mode shares (by context), outcomes, split
    latest/            weights + config + optimizer and random state (resume continues from here)
    best/              the checkpoint with the best periodic evaluation score (the moving average of the weights,
                       after ``Policy.refit``: the lvm's episode prior refit to the training posteriors)
    log.jsonl          one JSON object per logged step or evaluation
    tb/                TensorBoard event files
    metrics.json       the final evaluation of best/

Checkpoints are written to a temporary folder and renamed into place, so a killed run leaves the previous
complete one. With the same seed on the CPU, a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from gymnasium.envs.registration import EnvSpec

from lvm_policy import distributed, spaces
from lvm_policy.checkpoint import atomic_write_bytes, atomic_write_text, staged_dir
from lvm_policy.data import Demonstrations, load_demonstrations
from lvm_policy.ema import WeightAverage
from lvm_policy.errors import CheckpointError, ConfigError, DatasetError, EnvError, TrainingDivergedError
from lvm_policy.evaluate import demo_reference, eval_score, evaluate, heldout_nll, resolve_device, rollout, summarize
from lvm_policy.policies import CONFIG_CLASSES, Policy, make_policy
from lvm_policy.vision import image_slots

# Every registered class (a new class is one new file in lvm_policy/policies): its name and its options.
PolicyName = Literal[tuple(CONFIG_CLASSES)]  # type: ignore[valid-type]
REFIT_EPISODE_BATCH = 64  # whole episodes per batch handed to Policy.refit (bounds the memory of pixel episodes)


@dataclass
class TrainOptions:
    """Behavioural cloning of a policy class on any Minari dataset with Box actions, evaluated by rollouts in the
    dataset's environment."""

    policy: PolicyName = "lvm"
    """policy class to train"""
    demos: str | None = None
    """Minari dataset: a folder, or a dataset id under MINARI_DATASETS_PATH"""
    env: str | None = None
    """gymnasium env id for rollouts ("module:Env-v0" imports module first); default: the dataset's recorded env"""
    max_episode_steps: int | None = None
    """step cap of an evaluation episode (default: the env spec's time limit, else 1,000)"""
    num_envs: int = 16
    """environments of gymnasium's vector env, for an env without a torch twin"""
    vectorization: Literal["async", "sync"] = "async"
    """gymnasium vector env kind, for an env without a torch twin"""
    out: Path | None = None
    """run folder (default: runs/<policy>-seed<seed>)"""
    seed: int = 0
    """seed of initialisation, minibatches, sampling and the validation split"""
    steps: int = 6000
    """gradient steps"""
    batch_size: int = 512
    """transitions per minibatch"""
    lr: float = 1e-3
    """AdamW learning rate (cosine decay to 10% of it over the run)"""
    weight_decay: float = 1e-5
    """AdamW weight decay"""
    grad_clip: float = 10.0
    """clip the gradient norm to this (mixture likelihoods have large gradients)"""
    ema_decay: float = 0.999
    """decay of the moving average of the weights that is evaluated and saved (0: the raw weights)"""
    val_fraction: float = 0.1
    """share of the demonstration episodes held out for validation NLL"""
    eval_every: int = 1000
    """steps between periodic evaluations (validation NLL and rollouts); 0 disables them"""
    eval_episodes: int = 1000
    """rollout episodes of each periodic evaluation"""
    periodic_nll: bool = False
    """also the held-out NLL at each periodic evaluation (for its curve; the final evaluation always has it). Off by
    default: best/ is picked by the rollouts, and the NLL can cost more than the rollouts (flow's ODE density with
    chunks: 43 s per evaluation on TreeAvoid, the two-level lvm's nested IWAE 14 s). Without rollouts it is
    always computed: it then picks best/."""
    stop_when_perfect: bool = True
    """stop training at a periodic evaluation with the highest score there is (every episode a success, mode TV
    within the score's 0.05): no later checkpoint can replace that best/, so the run's results are those of all
    --steps, in less time (a single process; under torchrun every rank trains all --steps)"""
    final_eval_episodes: int = 10_000
    """rollout episodes of the final evaluation written to metrics.json"""
    log_every: int = 50
    """steps between log lines"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the data, the policy and the rollouts live"""
    resume: Path | None = None
    """continue the run in this folder from its latest checkpoint"""
    progress: bool = True
    """show a progress bar"""
    json: bool = False
    """end with one JSON line of the final metrics instead of the readable summary"""

    def policy_config(self):
        return getattr(self, self.policy)

    def validate(self) -> None:
        if self.demos is None:
            raise ConfigError("--demos is required: a Minari dataset folder or dataset id")
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must lie in [0, 1), got {self.val_fraction}")
        if self.eval_every < 0 or self.eval_episodes < 1 or self.final_eval_episodes < 1 or self.log_every < 1:
            raise ConfigError("--eval-every must be >= 0; --eval-episodes, --final-eval-episodes, --log-every >= 1")
        if self.num_envs < 1 or (self.max_episode_steps is not None and self.max_episode_steps < 1):
            raise ConfigError("--num-envs and --max-episode-steps must be at least 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        if not self.grad_clip > 0:
            raise ConfigError(f"--grad-clip must be positive, got {self.grad_clip}")
        try:
            self.policy_config().validate()
        except ValueError as exc:
            raise ConfigError(f"--{self.policy} options: {exc}") from None


# The training config: the shared options above and one field of options per registered class (--lvm.beta ...).
TrainConfig = make_dataclass(
    "TrainConfig",
    [(name, cls, field(default_factory=cls)) for name, cls in CONFIG_CLASSES.items()],
    bases=(TrainOptions,),
    namespace={"__doc__": TrainOptions.__doc__, "__module__": __name__},
)


def config_to_json(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    for k in ("demos", "out", "resume"):
        d[k] = None if d[k] is None else str(d[k])
    return d


def config_from_json(d: dict[str, Any]) -> TrainConfig:
    d = {k: v for k, v in d.items() if k != "environment"}
    for k, cls in CONFIG_CLASSES.items():
        d[k] = cls(**d[k]) if k in d else cls()
    for k in ("out", "resume"):
        d[k] = None if d[k] is None else Path(d[k])
    return TrainConfig(**d)


# -------------------------------------------------------------------------------------------------------
# Checkpoints: policy (safetensors + JSON) and training state (safetensors + JSON); no pickle anywhere.
# -------------------------------------------------------------------------------------------------------
def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: Path, policy: Policy, average: WeightAverage, opt, sched, gen: torch.Generator, step: int, extra: dict
) -> None:
    """Write policy and training state to ``folder`` atomically (staged beside it, then renamed)."""
    from safetensors.torch import save

    with staged_dir(folder) as staged:
        policy.save(staged)
        tensors, meta = _optimizer_to_flat(opt)
        tensors = {f"optim.{k}": v for k, v in tensors.items()}
        tensors.update({f"ema.{k}": v for k, v in average.state_tensors().items()})
        meta["ema_updates"] = average.updates
        tensors["rng.cpu"] = torch.get_rng_state()
        tensors["rng.batches"] = gen.get_state().cpu()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        atomic_write_bytes(staged / "train_state.safetensors", save(tensors))
        meta.update(step=step, scheduler=sched.state_dict(), **extra)
        atomic_write_text(staged / "train_state.json", json.dumps(meta))


def load_train_state(folder: Path, average: WeightAverage, opt, sched, gen: torch.Generator) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(folder / "train_state.safetensors"))
        meta = json.loads((folder / "train_state.json").read_text())
    except Exception as exc:  # noqa: BLE001  any damage to the files is reported the same way
        raise CheckpointError(f"{folder}: unreadable training state ({type(exc).__name__})") from None
    _optimizer_from_flat(opt, {k[6:]: v for k, v in tensors.items() if k.startswith("optim.")}, meta)
    average.load_state_tensors({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, meta["ema_updates"])
    sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    gen.set_state(tensors["rng.batches"].to(gen.device) if gen.device.type != "cpu" else tensors["rng.batches"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


# -------------------------------------------------------------------------------------------------------
# The loop
# -------------------------------------------------------------------------------------------------------
@dataclass
class EnvChoice:
    """The environment a run plays: its spec, or why there is none (rollouts off)."""

    spec: EnvSpec | None
    env_id: str | None
    mode_names: list[str] | None = None
    unavailable: str | None = None  # one line: why rollouts are off


def choose_env(env: str | None, demos: Demonstrations) -> EnvChoice:
    """The env of ``--env``, else the one the dataset recorded; made once to check that its spaces fit the data.

    A dataset whose observation or action sizes differ from the env's is a DatasetError; an env that cannot be
    made (its package is missing, no env recorded) gives rollouts off with the reason.
    """
    import gymnasium as gym

    from lvm_policy.rollout import env_spec_of, mode_names_of

    env_id = env or demos.env_id
    if env is None and demos.env_spec_json is None and demos.env_id is None:
        return EnvChoice(None, None, unavailable="the dataset records no environment; pass --env ID")
    try:
        spec = env_spec_of(env) if env is not None else EnvSpec.from_json(demos.env_spec_json)
        probe = gym.make(spec)
    except EnvError as exc:
        return EnvChoice(None, env_id, unavailable=str(exc))
    except Exception as exc:  # noqa: BLE001  a missing package, a bad spec: anything the env's import raises
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return EnvChoice(
            None, env_id, unavailable=f"environment {env_id!r} cannot be made ({type(exc).__name__}: {msg})"
        )
    try:
        data_obs, data_act = spaces.flat_dim(demos.observation_space), demos.action_space.shape[0]
        env_obs, env_act = spaces.flat_dim(probe.observation_space), int(probe.action_space.shape[0])
        if (data_obs, data_act) != (env_obs, env_act):
            raise DatasetError(
                f"{demos.source}: observations of size {data_obs} and actions of size {data_act} do not fit "
                f"environment {spec.id} ({env_obs} and {env_act})"
            )
        return EnvChoice(spec, spec.id, mode_names_of(probe.unwrapped) or mode_names_of(probe))
    finally:
        probe.close()


def environment_record(choice: EnvChoice, demos: Demonstrations) -> dict[str, Any]:
    """What config.json records of the environment: id, spec (gymnasium JSON), spaces (Minari's JSON)."""
    spec_json = demos.env_spec_json if choice.env_id == demos.env_id else None  # kept when it cannot be made
    if choice.spec is not None:
        try:
            spec_json = choice.spec.to_json()
        except Exception:  # noqa: BLE001  a callable entry point has no JSON form; the id remains
            spec_json = None
    return {
        "id": choice.env_id,
        "spec": spec_json,
        "observation_space": spaces.to_json(demos.observation_space),
        "action_space": spaces.to_json(demos.action_space),
        "rollouts_off": choice.unavailable,
    }


def make_optimizer(policy: Policy, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a cosine decay of the learning rate to 10% over ``cfg.steps``. A parameter group with a "delay"
    (``Policy.param_groups``) learns at the base rate ``cfg.lr`` until that step, at its own rate after it."""
    # fused: one kernel for all parameters instead of ~10 ops per tensor (about 1.5 ms of a 10 ms CPU step)
    opt = torch.optim.AdamW(policy.param_groups(cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    def cosine(s: int) -> float:
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))

    def schedule(group: dict):
        delay, base = group.get("delay", 0), cfg.lr / group["lr"]
        return lambda s: cosine(s) * (base if s < delay else 1.0)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [schedule(g) for g in opt.param_groups])
    return opt, sched


def gradient_step(
    policy: Policy,
    opt: torch.optim.Optimizer,
    obs: torch.Tensor,
    act: torch.Tensor,
    grad_clip: float,
    mask: torch.Tensor | None = None,
    loss_fn=None,
) -> tuple[dict[str, float], torch.Tensor]:
    """One update on a minibatch of windows (B, To, O), chunks (B, H, A) and their mask (B, H) or None (or whole
    segments (B, T, To, O), (B, T, H, A) with a mask (B, T, H));
    returns the logged loss terms and the pre-clip gradient norm.

    The norm stays a tensor (read it only when logging: one host sync per step, the loss's, is enough). A
    non-finite loss raises :class:`TrainingDivergedError` before the weights are touched. ``loss_fn`` replaces
    ``policy.loss`` (its DistributedDataParallel form across processes).
    """
    loss, logs = (loss_fn or policy.loss)(obs, act, mask)
    if not math.isfinite(logs["loss"]):
        raise TrainingDivergedError(f"loss became {logs['loss']}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
    opt.step()
    return logs, grad_norm


def prepare_run(cfg: TrainConfig) -> tuple[TrainConfig, Path, bool]:
    """Resolve the run folder; for --resume read the stored config (its options win over the command line)."""
    if cfg.resume is not None:
        run = Path(cfg.resume)
        if not (run / "config.json").is_file() or not (run / "latest" / "train_state.json").is_file():
            raise CheckpointError(f"{run}: nothing to resume (no config.json or latest/ checkpoint)")
        try:
            stored = config_from_json(json.loads((run / "config.json").read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{run / 'config.json'}: invalid training config ({exc})") from None
        stored.resume, stored.progress = run, cfg.progress
        return stored, run, True
    run = Path(cfg.out) if cfg.out is not None else Path("runs") / f"{cfg.policy}-seed{cfg.seed}"
    if (run / "latest").exists():
        raise ConfigError(f"{run} already holds a run; pass --resume {run} to continue it or choose another --out")
    return cfg, run, False


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) one run; returns the final metrics written to metrics.json (under torchrun: on rank 0;
    the other ranks return an empty dict)."""
    cfg, run, resuming = prepare_run(cfg)
    cfg.validate()
    ranks, device = distributed.init_from_env(resolve_device(cfg.device))
    try:
        with denormals_flushed(device):
            return _train(cfg, run, resuming, ranks, device)
    finally:
        distributed.finish(ranks)


@contextlib.contextmanager
def denormals_flushed(device: torch.device) -> Iterator[None]:
    """Flush denormal floats to zero on the CPU while training, then restore the default. Gradients scaled by a
    vanishing weight (an episode code of posterior probability 1e-40 weighs its whole decoder pass) are denormal,
    and x86 arithmetic on denormals is many times slower: the default lvm's first 300 steps on TreeAvoid took 41.6
    ms a step with them and 31.1 ms without (2 threads; ``python benchmarks/speed.py --tables denormals``). Values
    below 1.2e-38 change nothing a float32 model can resolve."""
    if device.type != "cpu" or not torch.set_flush_denormal(True):  # False where the CPU cannot flush
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _train(cfg: TrainConfig, run: Path, resuming: bool, ranks: distributed.Ranks, device: torch.device) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    # ---- data and environment ---------------------------------------------------------------------------
    demos = load_demonstrations(cfg.demos, device=device)
    train_set, val_set = demos.split(cfg.val_fraction, seed=cfg.seed)
    choice = choose_env(cfg.env, demos)
    if choice.unavailable and ranks.main:
        print(f"rollouts are off: {choice.unavailable}; training reports the validation NLL only")
    rollout_options = dict(
        num_envs=cfg.num_envs, vectorization=cfg.vectorization, max_episode_steps=cfg.max_episode_steps
    )

    # ---- seeding: fixed before anything random ------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    box = demos.action_space
    policy = make_policy(
        cfg.policy,
        demos.obs.shape[1],
        demos.act.shape[1],
        cfg.policy_config(),
        box.low.tolist(),
        box.high.tolist(),
        image_slots=image_slots(demos.observation_space),
    ).to(device)
    policy.env_id = choice.env_id
    policy.env_spec_json = environment_record(choice, demos)["spec"]
    policy.observation_space = demos.observation_space
    pc = policy.config
    windows = train_set.windows(pc.obs_horizon, pc.action_horizon)  # index tensors on the device
    policy.fit_normalizer(train_set.obs, train_set.act, train_set.act[windows.act_index])
    average = WeightAverage(policy, cfg.ema_decay)  # what is evaluated and saved as best/
    opt, sched = make_optimizer(policy, cfg)
    loss_fn = distributed.wrap(policy, ranks, device)  # policy.loss, or its DDP form across processes

    if ranks.main:
        run.mkdir(parents=True, exist_ok=True)
    reference = demo_reference(train_set, choice.mode_names)
    start_step, best_score, elapsed_before = 0, -math.inf, 0.0
    if resuming:
        from lvm_policy.policies import load_policy

        latest = load_policy(run / "latest", device)
        policy.load_state_dict(latest.state_dict())
        meta = load_train_state(run / "latest", average, opt, sched, gen)
        start_step, best_score, elapsed_before = meta["step"], meta["best_score"], meta["train_seconds"]
    elif ranks.main:
        record = dict(config_to_json(cfg), environment=environment_record(choice, demos))
        atomic_write_text(run / "config.json", json.dumps(record, indent=2))
        atomic_write_text(
            run / "demo_stats.json",
            json.dumps(
                dict(
                    reference,
                    val_episodes_of=str(Path(demos.source).resolve()),
                    val_fraction=cfg.val_fraction,
                    split_seed=cfg.seed,
                )
            ),
        )

    writer = SummaryWriter(str(run / "tb")) if ranks.main else None
    log_file = open(run / "log.jsonl", "a") if ranks.main else None  # noqa: SIM115  closed in finally

    def log(record: dict[str, Any]) -> None:
        if not ranks.main:
            return
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        for k, v in record.items():
            if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                writer.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record["step"])

    def checkpoint(step: int, seconds: float) -> None:
        if not ranks.main:
            return
        save_checkpoint(
            run / "latest", policy, average, opt, sched, gen, step, {"best_score": best_score, "train_seconds": seconds}
        )

    N, E = train_set.obs.shape[0], train_set.num_episodes

    def training_episodes():  # the training episodes in batches, for Policy.refit
        for idx in torch.arange(E, device=device).split(REFIT_EPISODE_BATCH):
            yield windows.gather_episodes(train_set.obs, train_set.act, idx)

    segments = policy.segments_per_batch()  # whole episodes per minibatch, for a class that learns from them
    stopped_at = None  # the step of an early stop (stop_when_perfect)
    t0 = time.perf_counter()
    bar = tqdm(
        range(start_step, cfg.steps),
        initial=start_step,
        total=cfg.steps,
        disable=not cfg.progress or not ranks.main,
        desc=f"{cfg.policy} seed {cfg.seed}",
        dynamic_ncols=True,
    )
    try:
        policy.train()
        for step in bar:
            policy.on_train_step(step)
            if segments is None:
                idx = torch.randint(N, (cfg.batch_size,), device=device, generator=gen)  # (B,) on the device
                idx = distributed.shard(idx, ranks)  # (B / world,): this process's part of the minibatch
                batch = windows.gather(train_set.obs, train_set.act, idx)  # (B, To, O), (B, H, A), (B, H)
            else:
                idx = distributed.shard(torch.randint(E, (segments,), device=device, generator=gen), ranks)
                batch = windows.gather_episodes(train_set.obs, train_set.act, idx)  # (B, T, To, O), ...
            try:
                logs, grad_norm = gradient_step(policy, opt, *batch[:2], cfg.grad_clip, batch[2], loss_fn)
            except TrainingDivergedError as exc:
                raise TrainingDivergedError(
                    f"{exc} at step {step}; the last good checkpoint is kept in {run / 'latest'}"
                ) from None
            sched.step()
            average.update(policy)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k in ("loss", "nll", "recon", "kl", "beta")})
                log(dict(kind="train", step=done, grad_norm=float(grad_norm), lr=sched.get_last_lr()[0], **logs))
            if ranks.main and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                t_fit = time.perf_counter()
                fit = average.average.refit(training_episodes, seed=cfg.seed + done)  # part of training: timed
                if fit:
                    fit["refit_seconds"] = time.perf_counter() - t_fit
                seconds = elapsed_before + time.perf_counter() - t0
                metrics = {}
                if choice.spec is not None:
                    r = rollout(average.average, choice.spec, cfg.eval_episodes, device=device, **rollout_options)
                    metrics = summarize(r, reference)
                if cfg.periodic_nll or choice.spec is None:
                    metrics["nll"] = heldout_nll(average.average, val_set.obs, val_set.act, val_set.episode)
                score = eval_score(metrics)
                log(
                    dict(
                        kind="eval",
                        step=done,
                        score=score,
                        train_seconds=seconds,
                        **fit,
                        **{k: v for k, v in metrics.items() if not isinstance(v, list)},
                    )
                )
                if score > best_score:
                    best_score = score
                    with staged_dir(run / "best") as staged:
                        average.average.save(staged)
                checkpoint(done, seconds)
                if cfg.stop_when_perfect and not ranks.distributed and "success_rate" in metrics and score >= 1.0:
                    log(dict(kind="stop", step=done, reason="a perfect periodic evaluation: best/ cannot change"))
                    stopped_at = done
                    break
            elif done == cfg.steps:
                checkpoint(done, elapsed_before + time.perf_counter() - t0)
    finally:
        bar.close()
        if ranks.main:
            writer.flush()
            log_file.close()
    train_seconds = elapsed_before + time.perf_counter() - t0
    if not ranks.main:  # rank 0 evaluates and writes
        return {}
    if not (run / "best").exists():  # periodic evaluation disabled: the final weights are the best we know
        average.average.refit(training_episodes, seed=cfg.seed + cfg.steps)
        with staged_dir(run / "best") as staged:
            average.average.save(staged)

    # ---- final evaluation of best/ ------------------------------------------------------------------------
    from lvm_policy.policies import load_policy

    best = load_policy(run / "best", device)
    t_eval = time.perf_counter()
    metrics = evaluate(best, choice.spec, reference, val_set, cfg.final_eval_episodes, device=device, **rollout_options)
    metrics.update(
        eval_seconds=time.perf_counter() - t_eval,
        policy=cfg.policy,
        seed=cfg.seed,
        steps=cfg.steps,
        stopped_at=stopped_at,
        train_seconds=train_seconds,
        device=str(device),
        env_id=choice.env_id,
        rollouts_off=choice.unavailable,
        run=str(run),
    )
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2))
    writer.close()
    return metrics


def validation_split(run: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], Demonstrations | None]:
    """The demonstration reference of a run and its held-out episodes (None if the dataset is gone)."""
    stats = json.loads((Path(run) / "demo_stats.json").read_text())
    try:
        demos = load_demonstrations(stats["val_episodes_of"], device=device)
    except Exception:  # noqa: BLE001  the NLL is then reported as missing, the rollouts still run
        return stats, None
    _, val = demos.split(stats["val_fraction"], seed=stats["split_seed"])
    return stats, val
