"""The policy interface, written once: normalisation, ``act``, SB3 ``predict``, save and load.

A policy class writes only what differs: ``_loss``, ``_log_prob``, ``_sample`` and ``_mode`` on normalised
observations and raw (environment-space) actions. Everything public goes through this base class, so the
training loop, the evaluator and stable-baselines3 never ask which class they hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from gymnasium import spaces as gym_spaces
from torch import nn

from lvm_policy import spaces
from lvm_policy.checkpoint import atomic_write_bytes, atomic_write_text
from lvm_policy.errors import CheckpointError
from lvm_policy.nets import kmeans
from lvm_policy.temporal import ActingState
from lvm_policy.vision import ImageSlot, ObservationFeatures, slots_from_json, slots_to_json

FORMAT_VERSION = 2  # 2: per-dimension action box, env spec and observation space
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


@dataclass
class PolicyConfig:
    """Options every class shares. Subclass it for a class's own options."""

    # How a run stored before an option existed behaved, for options whose default changed what training does
    # (benchmark.same_run: such a run is not reused as if it had the new default). Other new options behaved as
    # their default.
    # (Also how a saved policy loads.) Before these options: DrQ's shift, the conv encoder.
    absent_means: ClassVar[dict[str, Any]] = {"image_shift": None, "vision_encoder": "conv"}

    hidden_dim: int = 128
    """width of every hidden layer"""
    num_layers: int = 2
    """hidden layers per network"""
    obs_horizon: int = 1
    """To: observations the policy reads, the current one and To - 1 before it (an episode's first is repeated)"""
    action_horizon: int = 1
    """H: actions predicted per call, a_t .. a_{t+H-1}"""
    action_steps: int = 1
    """Ta <= H: actions executed before the next prediction"""
    temporal_ensemble: float | None = None
    """off (None), or ACT's m: predict every step and average every chunk's action for the step with weights
    exp(-m i), i = 0 for the oldest (needs action_steps = 1)"""
    vision_encoder: Literal["conv", "patch", "resnet18"] = "patch"
    """encoder of camera images (only with images in the observation): a patchify stem and one convolution, three
    stride-2 convolutions (as accurate on the pixel tasks, at half the evaluation speed), or a ResNet-18 with
    GroupNorm and a spatial-softmax head (lvm_policy/vision.py)"""
    image_shift: int | None = 0
    """largest random shift, in pixels, of training images (DrQ's augmentation); None: DrQ's share, 4 pixels per
    84 (2 on a 32-pixel image); 0: none. Off by default: on the package's cameras, which follow the car, DrQ's
    share lowered gmm's success from 0.94 to 0.70 (docs/results.md, "Camera observations"); fixed cameras, as
    on most robots, are where the field uses it"""

    @property
    def per_step(self) -> bool:
        """True for 1/1/1 without ensembling: the policy acts on the current state alone, one action per call."""
        return self.obs_horizon == self.action_horizon == self.action_steps == 1 and self.temporal_ensemble is None

    def effective(self) -> PolicyConfig:
        """The config with every option that defaults by context (None) replaced by the value it stands for, so
        that two configs that train the same policy compare equal."""
        return self

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not np.isfinite(v):
                raise ValueError(f"{f.name} must be finite, got {v}")
        if self.hidden_dim < 1 or self.num_layers < 0:
            raise ValueError(f"hidden_dim must be >= 1 and num_layers >= 0, got {self.hidden_dim}, {self.num_layers}")
        if self.obs_horizon < 1 or self.action_horizon < 1 or not 1 <= self.action_steps <= self.action_horizon:
            raise ValueError(
                "need obs_horizon >= 1, action_horizon >= 1 and 1 <= action_steps <= action_horizon, got "
                f"{self.obs_horizon}, {self.action_horizon}, {self.action_steps}"
            )
        if self.image_shift is not None and self.image_shift < 0:
            raise ValueError(f"image_shift must be >= 0 pixels, got {self.image_shift}")
        if self.vision_encoder not in ("conv", "patch", "resnet18"):
            raise ValueError(f"vision_encoder must be conv, patch or resnet18, got {self.vision_encoder!r}")
        if self.temporal_ensemble is not None and (self.temporal_ensemble < 0 or self.action_steps != 1):
            raise ValueError(
                "temporal_ensemble needs m >= 0 and action_steps = 1, got "
                f"{self.temporal_ensemble}, {self.action_steps}"
            )


_REGISTRY: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` available by ``cls.name`` to make_policy and load_policy."""
    if cls.name in _REGISTRY:
        raise ValueError(f"policy name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def list_policies() -> list[str]:
    return sorted(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(list_policies())}")
    return _REGISTRY[name]


class Policy(nn.Module):
    """Base of every policy: pi(a | s) with a loss, a log-density, sampling and acting."""

    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]]
    has_density: ClassVar[bool] = True  # False: log_prob is undefined (NaN), e.g. a categorical over points
    # False where the class injects no noise beyond its (still drawn) mode choice, so that low-noise acting is the
    # same procedure as sampling: an evaluation of both acting modes then needs to run only one.
    low_noise_differs: ClassVar[bool] = True
    # The rows compare_baselines runs for this class by default: row name -> options changed from the class's
    # defaults. None: one row, named after the class, with its defaults.
    benchmark_rows: ClassVar[dict[str, dict[str, Any]] | None] = None

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: PolicyConfig,
        action_low: float | Sequence[float] = -1.0,
        action_high: float | Sequence[float] = 1.0,
        image_slots: Sequence[ImageSlot] | None = None,
    ):
        super().__init__()
        config.validate()
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        # Camera images in the observation: encoded into features before the class's networks (lvm_policy/vision.py).
        self.image_slots = list(image_slots or [])
        self.vision = (
            ObservationFeatures(obs_dim, self.image_slots, encoder=config.vision_encoder, shift=config.image_shift)
            if self.image_slots
            else None
        )
        self.feature_dim = self.vision.dim if self.vision is not None else obs_dim  # per observation
        # What a class's networks see and model: the flat window of To observations' features and the flat chunk
        # of H actions.
        self.horizon = config.action_horizon
        self.in_dim, self.chunk_dim = self.feature_dim * config.obs_horizon, act_dim * config.action_horizon
        self._acting: ActingState | None = None  # per-environment history and action queue (not per_step)
        # How a chunked policy replans the environments whose queue ran out: "subset" computes only their chunks
        # (a host sync: the CPU's choice), "all" computes every environment's and keeps the needed ones with
        # torch.where (no sync, capturable in a CUDA graph); "auto" picks by device (benchmarks/speed.py, chunks).
        self.replan = "auto"
        # Recorded at training time: which env the policy plays, and its native observation space (a Dict is
        # flattened by predict, so SB3's evaluate_policy works on the env as it is).
        self.env_id: str | None = None
        self.env_spec_json: str | None = None
        self.observation_space: gym_spaces.Space | None = None
        # Normalisation statistics are buffers: they are saved and moved with the weights.
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("act_mean", torch.zeros(act_dim))
        self.register_buffer("act_std", torch.ones(act_dim))
        # The action box, per dimension (from the dataset's action space; may be infinite).
        self.register_buffer("act_low", torch.as_tensor(action_low, dtype=torch.float32).expand(act_dim).clone())
        self.register_buffer("act_high", torch.as_tensor(action_high, dtype=torch.float32).expand(act_dim).clone())

    # ----------------------------------------------------------------------------------- normalisation
    @torch.no_grad()
    def fit_normalizer(self, obs: torch.Tensor, act: torch.Tensor, chunks: torch.Tensor | None = None) -> None:
        """Set observation and action statistics from data (N, O), (N, A); constant columns get std 1. chunks
        (N, H, A), the training chunks, are for classes that fit more than statistics (BeT's bins). Image pixels
        keep mean 0 and std 1: the encoder scales them by a constant."""
        if self.vision is not None:
            idx = self.vision.state_index
            state = obs[:, idx].float()  # (N, S): the pixels are never converted as a whole
            self.obs_mean.zero_()
            self.obs_std.fill_(1.0)
            if idx.numel():
                self.obs_mean[idx] = state.mean(0)
                self.obs_std[idx] = torch.where(state.std(0) > 1e-6, state.std(0), torch.ones_like(state[0]))
        else:
            self.obs_mean.copy_(obs.mean(0))
            self.obs_std.copy_(torch.where(obs.std(0) > 1e-6, obs.std(0), torch.ones_like(self.obs_std)))
        self.act_mean.copy_(act.mean(0))
        self.act_std.copy_(torch.where(act.std(0) > 1e-6, act.std(0), torch.ones_like(self.act_std)))

    @torch.no_grad()
    def fit_chunk_centres(
        self, centres: torch.Tensor, act: torch.Tensor, chunks: torch.Tensor | None, seed: int
    ) -> None:
        """Fill the buffer ``centres`` (K, H * A) with k-means centres of the normalised training chunks (N, H, A);
        without chunks, of each action (N, A) held for the H steps. BeT's bins and the lvm's codebook."""
        data = act.repeat(1, self.horizon) if chunks is None else chunks.reshape(chunks.shape[0], -1)
        fitted = kmeans(self.normalize_act(data), centres.shape[0], seed)
        centres.zero_()
        centres[: fitted.shape[0]] = fitted.to(centres.device)

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations (..., k * O) (one or a window of k), normalised per observation: (..., k * F), F the
        feature size (F = O without images; with images, the state entries and each image's encoding)."""
        o = obs.reshape(*obs.shape[:-1], -1, self.obs_dim)
        if self.vision is None:
            return ((o - self.obs_mean) / self.obs_std).reshape(obs.shape)
        features = self.vision(o.reshape(-1, self.obs_dim).to(self.obs_mean.dtype), self.obs_mean, self.obs_std)
        return features.reshape(*obs.shape[:-1], -1)

    def normalize_act(self, act: torch.Tensor) -> torch.Tensor:
        """Actions (..., k * A) (one or a chunk of k), normalised per action."""
        a = act.reshape(*act.shape[:-1], -1, self.act_dim)
        return ((a - self.act_mean) / self.act_std).reshape(act.shape)

    def denormalize_act(self, act_n: torch.Tensor) -> torch.Tensor:
        a = act_n.reshape(*act_n.shape[:-1], -1, self.act_dim)
        return (a * self.act_std + self.act_mean).reshape(act_n.shape)

    @property
    def chunk_low(self) -> torch.Tensor:
        """(H * A,) the action box's lower bound, once per action of a chunk."""
        return self.act_low.repeat(self.horizon)

    @property
    def chunk_high(self) -> torch.Tensor:
        return self.act_high.repeat(self.horizon)

    def act_log_half_width(self) -> torch.Tensor:
        """(H * A,) log of the action box's half width (0 for an unbounded dimension): options given "in action
        units" are in units of the box's half width, so that they mean the same on [-1, 1] and on any box."""
        half = 0.5 * (self.act_high - self.act_low)
        return torch.where(torch.isfinite(half) & (half > 0), half, torch.ones_like(half)).log().repeat(self.horizon)

    def act_log_jacobian(self) -> torch.Tensor:
        """log |d a_n / d a| of one chunk (H actions): add to a log-density of normalised chunks to get one of raw
        chunks."""
        per_action = -torch.log(self.act_std).sum()
        return per_action if self.horizon == 1 else per_action * self.horizon

    def dim_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """A chunk's step mask (..., H) as a mask of its flat dimensions (..., H * A), in the networks' dtype."""
        return None if mask is None else mask.to(self.act_mean.dtype).repeat_interleave(self.act_dim, dim=-1)

    # ---------------------------------------------------------------------- what each class writes
    # Every method sees flat windows obs_n (B, To * O) and flat chunks (B, H * A); with H = 1 these are the single
    # observation and action of a per-step policy.
    def _loss(
        self, obs_n: torch.Tensor, act: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """mask (B, H): the chunk's actions inside the episode (None: all). A class whose likelihood factorises
        over the chunk's actions leaves the others out of the loss; the others train on the repeated last
        action (Diffusion Policy's padding)."""
        raise NotImplementedError

    def _log_prob(self, obs_n: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample(self, obs_n: torch.Tensor, n: int) -> torch.Tensor:
        raise NotImplementedError

    def _mode(self, obs_n: torch.Tensor) -> torch.Tensor:
        """The low-noise action: the class's discrete or latent choice is still drawn, its noise is not."""
        raise NotImplementedError

    def _act(self, obs_n: torch.Tensor, deterministic: bool, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H * A) raw chunks for windows (B, To * O); a class with per-episode state (a held latent) overrides
        this. rows (B,): which of the acting environments the batch holds (None: all of them, in order)."""
        return self._mode(obs_n) if deterministic else self._sample(obs_n, 1)[:, 0]

    def segments_per_batch(self) -> int | None:
        """The training loop's one hook for classes that learn from whole episodes: how many episodes make a
        minibatch (their ``loss`` then gets obs (B, T, O), act (B, T, A) and a mask (B, T)); None (the default)
        for classes that learn from single transitions (B, O), (B, A)."""
        return None

    def on_train_step(self, step: int) -> None:
        """Called by the training loop before each update (for schedules such as a KL warm-up)."""

    def refit(self, episodes: Callable[[], Iterable[tuple]], seed: int = 0) -> dict[str, float]:
        """The training loop's hook for fitting done outside the gradient steps, on the copy of the weights that is
        evaluated and saved, before each evaluation (the lvm refits its episode prior). episodes() iterates over
        the training episodes in batches as ``Windows.gather_episodes`` gives them. Returns numbers to log; the
        default does nothing."""
        return {}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups at the base learning rate ``lr``: one group; a class whose networks learn
        at different rates gives more (as ACT's backbone has its own rate)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def set_action_steps(self, steps: int) -> None:
        """Execute ``steps`` actions of each predicted chunk before predicting again: an acting choice, the weights
        stay (Diffusion Policy varies its n_action_steps at evaluation the same way). 1 <= steps <= action_horizon;
        a ValueError otherwise. Forgets every environment's queue."""
        config = replace(self.config, action_steps=steps)
        config.validate()
        self.config = config
        self.reset()

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Forget per-episode state (history, action queue, a held latent) for the environments where mask (N,)
        is true; None forgets everything."""
        if mask is None or self._acting is None or mask.shape[0] != self._acting.num_envs:
            self._acting = None
        else:
            self._acting.mark_fresh(mask)
        self._reset(mask)

    def _reset(self, mask: torch.Tensor | None) -> None:
        """A class's own per-episode state (e.g. a held latent)."""

    # ------------------------------------------------------------------------------ the interface
    def _flat(self, obs: torch.Tensor, act: torch.Tensor, lead: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows (..., To, O) or (..., To * O) and chunks (..., H, A) or (..., H * A) as flat windows and chunks."""
        obs, act = obs.reshape(*obs.shape[:lead], -1), act.reshape(*act.shape[:lead], -1)
        if obs.shape[-1] != self.obs_dim * self.config.obs_horizon or act.shape[-1] != self.chunk_dim:
            raise ValueError(
                f"expected windows of {self.config.obs_horizon} x {self.obs_dim} observations and chunks of "
                f"{self.horizon} x {self.act_dim} actions, got {obs.shape[-1]} and {act.shape[-1]} numbers"
            )
        return obs, act

    def loss(
        self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss and a dict of logged floats (one host sync, at the end) on windows (B, To, O), chunks
        (B, H, A) and their mask (B, H) (flat (B, To * O), (B, H * A) also do; with 1/1/1, single transitions
        (B, O), (B, A)); a segment class gets whole episodes (B, T, To, O), (B, T, H, A) and a mask (B, T, H)."""
        obs, act = self._flat(obs, act, 1 if self.segments_per_batch() is None else 2)
        obs_n = self.normalize_obs(obs)
        loss, logs = self._loss(obs_n, act) if mask is None else self._loss(obs_n, act, mask)
        return loss, self._logged(loss, logs)

    @staticmethod
    def _logged(loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss and the logged tensors as floats, in one host sync."""
        values = torch.stack([loss.detach()] + [v.detach().float().reshape(()) for v in logs.values()]).tolist()
        return dict(zip(["loss", *logs.keys()], values))

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(B,) log-density of raw action chunks given windows (exact, or a lower bound for latent-variable
        classes); windows (B, To, O) or (B, To * O), chunks (B, H, A) or (B, H * A). With H > 1 it is the density
        of the whole chunk, not of one action."""
        obs, act = self._flat(obs, act, 1)
        return self._log_prob(self.normalize_obs(obs), act)

    def sample(self, obs: torch.Tensor, n: int = 1) -> torch.Tensor:
        """(B, n, H * A) action chunks drawn from pi(. | window) for windows (B, To * O), inside the action box."""
        obs = obs.reshape(obs.shape[0], -1)
        return torch.clamp(self._sample(self.normalize_obs(obs), n), self.chunk_low, self.chunk_high)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """(N, A) actions for the current observations (N, O) of N environments; torch in and out, on the
        policy's device. A policy with a history or chunks keeps per-environment state between calls: call
        ``reset(mask)`` for the environments that start an episode."""
        if obs.dtype != self.obs_mean.dtype:  # e.g. float64 from numpy code
            obs = obs.to(self.obs_mean.dtype)
        obs_n = self.normalize_obs(obs)
        if self.config.per_step:  # today's per-step policy, bit for bit
            return torch.clamp(self._act(obs_n, deterministic), self.act_low, self.act_high)
        return torch.clamp(self._act_temporal(obs_n, deterministic), self.act_low, self.act_high)

    def _act_temporal(self, obs_n: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """(N, A): push the observation into each environment's history, plan where needed, pop an action.

        Fixed shapes and in-place updates only, so the torch-twin rollout stays capturable in a CUDA graph when
        every environment's chunk is computed ("all"); "subset" plans only the environments that need it."""
        c, N, A = self.config, obs_n.shape[0], self.act_dim
        if self._acting is None or not self._acting.fits(N, obs_n.device):
            ensemble = c.temporal_ensemble is not None
            self._acting = ActingState(
                N, c.obs_horizon, c.action_horizon, self.feature_dim, A, ensemble, obs_n.device, obs_n.dtype
            )
        state = self._acting.writable()
        window = state.push(obs_n)  # (N, To * O)
        if c.temporal_ensemble is not None:  # a chunk every step, averaged
            chunk = self._act(window, deterministic).reshape(N, c.action_horizon, A)
            action = state.ensemble(chunk, c.temporal_ensemble)
        else:
            need = state.fresh | (state.ptr >= c.action_steps)  # (N,) queue spent or episode starting
            replan = self.replan if self.replan != "auto" else ("all" if obs_n.device.type == "cuda" else "subset")
            if replan == "all":
                action = state.next_action(need, self._act(window, deterministic).reshape(N, c.action_horizon, A))
            else:
                rows = need.nonzero()[:, 0]  # (K,) a host sync: the CPU path
                if rows.numel():
                    chunk = self._act(window[rows], deterministic, rows=rows).reshape(-1, c.action_horizon, A)
                    state.queue[rows] = chunk
                action = state.next_action(need, None)
        state.fresh.fill_(False)
        return action

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """stable-baselines3's protocol: the env's native observation, one or a batch (a Dict observation is
        flattened in its space's key order), in; (action, state) out."""
        was_training = self.training
        if was_training:  # eval() walks every submodule: skip it when already in eval mode
            self.eval()
        # Inference mode rather than no_grad: no version counters or views to track, measurably less per-op
        # overhead at batch 1 (benchmarks/speed.py, latency table).
        with torch.inference_mode():
            space = self.observation_space
            if isinstance(space, gym_spaces.Dict) or isinstance(observation, dict):
                if not isinstance(space, gym_spaces.Dict):
                    raise ValueError("a dict observation needs a policy trained on a Dict observation space")
                single = spaces.is_single(space, observation)
                batch = spaces.add_batch_dim(space, observation) if single else observation
                observation = spaces.flatten_batch(space, {k: np.asarray(v) for k, v in batch.items()})
            obs = torch.from_numpy(np.asarray(observation, dtype=np.float32))
            device = self.obs_mean.device
            if device.type != "cpu":
                obs = obs.to(device)
            if not isinstance(space, gym_spaces.Dict):
                single = obs.dim() <= 1
            obs = obs.reshape(-1, self.obs_dim)
            if episode_start is not None:
                self.reset(torch.as_tensor(np.asarray(episode_start, dtype=bool).reshape(-1), device=device))
            action = self.act(obs, deterministic=deterministic).cpu().numpy()
        if was_training:
            self.train()
        return (action[0] if single else action), state

    @property
    def device(self) -> torch.device:
        return self.obs_mean.device

    # ------------------------------------------------------------------------------ save / load
    def describe(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "policy": self.name,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "env_id": self.env_id,
            "env_spec": self.env_spec_json,
            "observation_space": None if self.observation_space is None else spaces.to_json(self.observation_space),
            "images": slots_to_json(self.image_slots),
            "config": asdict(self.config),
        }

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` (weights and normalisers) and ``config.json``, each atomically."""
        from safetensors.torch import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors))
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.describe(), indent=2))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> Policy:
        return load_policy(directory, device)


def load_policy(directory: str | Path, device: str | torch.device = "cpu") -> Policy:
    """Rebuild any registered policy from a folder written by ``save`` (or a run folder's ``best/``).

    Only JSON and safetensors are read: no code runs. Anything wrong raises :class:`CheckpointError`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if (directory / "best" / WEIGHTS_FILE).is_file() and not (directory / WEIGHTS_FILE).is_file():
        directory = directory / "best"  # a training run folder
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint folder")
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not weights_path.is_file():
        pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(
                f"{directory}: refusing to load {pickles[0]}: only safetensors checkpoints are loaded "
                "(pickle can run code)"
            )
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    try:
        meta = json.loads(config_path.read_text())
        name, obs_dim, act_dim = meta["policy"], int(meta["obs_dim"]), int(meta["act_dim"])
        if int(meta.get("format_version", -1)) != FORMAT_VERSION:
            raise CheckpointError(f"{config_path}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
        cls = policy_class(name)
        known = {f.name for f in fields(cls.config_class)}
        unknown = set(meta["config"]) - known
        if unknown:
            raise CheckpointError(f"{config_path}: unknown {name} options {sorted(unknown)}")
        images = slots_from_json(meta.get("images"))
        config = cls.config_class(**{**cls.config_class.absent_means, **meta["config"]})  # saved before an option
        policy = cls(obs_dim, act_dim, config, image_slots=images)
        policy.env_id = meta.get("env_id")
        policy.env_spec_json = meta.get("env_spec")
        if meta.get("observation_space"):
            policy.observation_space = spaces.from_json(meta["observation_space"])
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: missing") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: invalid policy config ({type(exc).__name__}: {exc})") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{weights_path}: weights do not match the config ({first})") from None
    for k, v in policy.state_dict().items():
        bound = k in ("act_low", "act_high")  # an unbounded action dimension is stored as +-inf
        if v.is_floating_point() and not bool((~torch.isnan(v) if bound else torch.isfinite(v)).all()):
            raise CheckpointError(f"{weights_path}: tensor {k} holds NaN or infinite values")
    return policy.to(device).eval()
