"""One training loop for every policy class: minibatches indexed on the device, ``policy.loss``, AdamW.

A run folder holds::

    config.json        the training config (every option, including the class's own)
    demo_stats.json    what evaluation compares with: the demonstrations' side shares, crossing points, split
    latest/            weights + config + optimizer and random state (resume continues from here)
    best/              the checkpoint with the best periodic evaluation score
    log.jsonl          one JSON object per logged step or evaluation
    tb/                TensorBoard event files
    metrics.json       the final evaluation of best/

Checkpoints are written to a temporary folder and renamed into place, so a killed run leaves the previous
complete one. With the same seed on the CPU, a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lvm_policy.checkpoint import atomic_write_bytes, atomic_write_text, staged_dir
from lvm_policy.collect import DEFAULT_DEMOS
from lvm_policy.data import Demonstrations, load_demonstrations
from lvm_policy.ema import WeightAverage
from lvm_policy.errors import CheckpointError, ConfigError, TrainingDivergedError
from lvm_policy.evaluate import demo_reference, evaluate_policy_batched, heldout_nll, resolve_device, rollout, summarize
from lvm_policy.policies import Policy, make_policy
from lvm_policy.policies.autoregressive import AutoregressiveConfig
from lvm_policy.policies.gaussian import GaussianConfig
from lvm_policy.policies.gmm import GMMConfig
from lvm_policy.policies.latent import LatentConfig

PolicyName = Literal["lvm", "gmm", "autoregressive", "gaussian"]
ENV_ID = "TreeAvoid-v0"


@dataclass
class TrainConfig:
    """Behavioural cloning of one policy class on TreeAvoid demonstrations."""

    policy: PolicyName = "lvm"
    """policy class to train"""
    demos: Path = DEFAULT_DEMOS
    """Minari dataset folder (the default one is collected first if it is missing)"""
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
    lvm: LatentConfig = field(default_factory=LatentConfig)
    gmm: GMMConfig = field(default_factory=GMMConfig)
    autoregressive: AutoregressiveConfig = field(default_factory=AutoregressiveConfig)
    gaussian: GaussianConfig = field(default_factory=GaussianConfig)

    def policy_config(self):
        return getattr(self, self.policy)

    def validate(self) -> None:
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
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        if not self.grad_clip > 0:
            raise ConfigError(f"--grad-clip must be positive, got {self.grad_clip}")
        try:
            self.policy_config().validate()
        except ValueError as exc:
            raise ConfigError(f"--{self.policy} options: {exc}") from None


def config_to_json(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    for k in ("demos", "out", "resume"):
        d[k] = None if d[k] is None else str(d[k])
    return d


def config_from_json(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    nested = {"lvm": LatentConfig, "gmm": GMMConfig, "autoregressive": AutoregressiveConfig, "gaussian": GaussianConfig}
    for k, cls in nested.items():
        d[k] = cls(**d[k])
    for k in ("demos", "out", "resume"):
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
def eval_score(metrics: dict[str, Any]) -> float:
    """Periodic-evaluation score that picks best/: the success rate, minus the part of the gap between the
    left share and the demonstrations' that exceeds 0.05 (a 1,000-episode estimate carries about +-0.03)."""
    gap = abs(metrics["left_fraction"] - metrics["demo_left_fraction"])
    return metrics["success_rate"] - (max(0.0, gap - 0.05) if math.isfinite(gap) else 1.0)


def make_optimizer(policy: Policy, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a cosine decay of the learning rate to 10% over ``cfg.steps``."""
    # fused: one kernel for all parameters instead of ~10 ops per tensor (about 1.5 ms of a 10 ms CPU step)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    return opt, sched


def gradient_step(
    policy: Policy, opt: torch.optim.Optimizer, obs: torch.Tensor, act: torch.Tensor, grad_clip: float
) -> tuple[dict[str, float], torch.Tensor]:
    """One update on a minibatch (B, O), (B, A); returns the logged loss terms and the pre-clip gradient norm.

    The norm stays a tensor (read it only when logging: one host sync per step, the loss's, is enough). A
    non-finite loss raises :class:`TrainingDivergedError` before the weights are touched.
    """
    loss, logs = policy.loss(obs, act)
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
    """Train (or resume) one run; returns the final metrics written to metrics.json."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    cfg, run, resuming = prepare_run(cfg)
    cfg.validate()
    device = resolve_device(cfg.device)

    # ---- data -----------------------------------------------------------------------------------------
    if not Path(cfg.demos).exists() and Path(cfg.demos).resolve() == DEFAULT_DEMOS.resolve():
        from lvm_policy.collect import collect

        print(f"collecting the default demonstrations into {cfg.demos}")
        collect(cfg.demos)
    demos = load_demonstrations(cfg.demos, device=device)
    train_set, val_set = demos.split(cfg.val_fraction, seed=cfg.seed)

    # ---- seeding: fixed before anything random ------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    policy = make_policy(cfg.policy, demos.obs.shape[1], demos.act.shape[1], cfg.policy_config()).to(device)
    policy.env_id = ENV_ID
    policy.fit_normalizer(train_set.obs, train_set.act)
    average = WeightAverage(policy, cfg.ema_decay)  # what is evaluated and saved as best/
    opt, sched = make_optimizer(policy, cfg)

    run.mkdir(parents=True, exist_ok=True)
    reference = demo_reference(train_set)
    start_step, best_score, elapsed_before = 0, -math.inf, 0.0
    if resuming:
        from lvm_policy.policies import load_policy

        latest = load_policy(run / "latest", device)
        policy.load_state_dict(latest.state_dict())
        meta = load_train_state(run / "latest", average, opt, sched, gen)
        start_step, best_score, elapsed_before = meta["step"], meta["best_score"], meta["train_seconds"]
    else:
        atomic_write_text(run / "config.json", json.dumps(config_to_json(cfg), indent=2))
        atomic_write_text(
            run / "demo_stats.json",
            json.dumps(
                dict(reference, val_episodes_of=str(cfg.demos), val_fraction=cfg.val_fraction, split_seed=cfg.seed)
            ),
        )

    writer = SummaryWriter(str(run / "tb"))
    log_file = open(run / "log.jsonl", "a")  # noqa: SIM115  closed in finally

    def log(record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        for k, v in record.items():
            if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                writer.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record["step"])

    def checkpoint(step: int, seconds: float) -> None:
        save_checkpoint(
            run / "latest", policy, average, opt, sched, gen, step, {"best_score": best_score, "train_seconds": seconds}
        )

    N = train_set.obs.shape[0]
    t0 = time.perf_counter()
    bar = tqdm(
        range(start_step, cfg.steps),
        initial=start_step,
        total=cfg.steps,
        disable=not cfg.progress,
        desc=f"{cfg.policy} seed {cfg.seed}",
        dynamic_ncols=True,
    )
    try:
        policy.train()
        for step in bar:
            idx = torch.randint(N, (cfg.batch_size,), device=device, generator=gen)  # (B,) indexed on the device
            policy.on_train_step(step)
            try:
                logs, grad_norm = gradient_step(policy, opt, train_set.obs[idx], train_set.act[idx], cfg.grad_clip)
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
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                seconds = elapsed_before + time.perf_counter() - t0
                metrics = summarize(rollout(average.average, cfg.eval_episodes, device=device), reference)
                metrics["nll"] = heldout_nll(average.average, val_set.obs, val_set.act)
                score = eval_score(metrics)
                log(
                    dict(
                        kind="eval",
                        step=done,
                        score=score,
                        train_seconds=seconds,
                        **{k: v for k, v in metrics.items() if not isinstance(v, list)},
                    )
                )
                if score > best_score:
                    best_score = score
                    with staged_dir(run / "best") as staged:
                        average.average.save(staged)
                checkpoint(done, seconds)
            elif done == cfg.steps:
                checkpoint(done, elapsed_before + time.perf_counter() - t0)
    finally:
        bar.close()
        writer.flush()
        log_file.close()
    train_seconds = elapsed_before + time.perf_counter() - t0
    if not (run / "best").exists():  # periodic evaluation disabled: the final weights are the best we know
        with staged_dir(run / "best") as staged:
            average.average.save(staged)

    # ---- final evaluation of best/ ------------------------------------------------------------------------
    from lvm_policy.policies import load_policy

    best = load_policy(run / "best", device)
    metrics = evaluate_policy_batched(best, reference, val_set, cfg.final_eval_episodes, device=device)
    metrics.update(policy=cfg.policy, seed=cfg.seed, steps=cfg.steps, train_seconds=train_seconds, device=str(device))
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
