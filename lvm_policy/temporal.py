"""Observation history and action chunks, in one place for every class.

A policy with ``obs_horizon`` To, ``action_horizon`` H and ``action_steps`` Ta reads the flat window
(s_{t-To+1}, ..., s_t) of To * O numbers and models the flat chunk (a_t, ..., a_{t+H-1}) of H * A numbers, so a
class's networks and mathematics are those of a per-step policy with wider inputs and outputs. This module holds
the two places where time appears:

- training: :func:`window_index`, index tensors into the flat (S, O) and (S, A) arrays of a dataset (no copy of
  the data per window); a window at an episode's start repeats its first observation, a chunk past its end
  repeats its last action and is masked;
- acting: :class:`ActingState`, the per-environment history, action queue and (ACT's temporal ensembling)
  buffer of recent chunks, updated in place with fixed shapes so that a CUDA graph can replay it.
"""

from __future__ import annotations

import torch


def window_index(
    episode: torch.Tensor, obs_horizon: int, action_horizon: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training window of every step, as indices into the flat step arrays.

    episode (S,): the episode of each step, contiguous and ascending (as :class:`~lvm_policy.data.Demonstrations`
    keeps it). Returns obs_index (S, To) (oldest first, clamped to the episode's first step), act_index (S, H)
    (clamped to its last step) and act_mask (S, H) (False where the chunk runs past the episode's end).
    """
    S, device = episode.shape[0], episode.device
    E = int(episode.max()) + 1 if S else 0
    lengths = torch.bincount(episode, minlength=E)  # (E,)
    first = (torch.cumsum(lengths, 0) - lengths)[episode]  # (S,) index of each step's episode start
    last = first + lengths[episode] - 1  # (S,) index of its episode's last step
    s = torch.arange(S, device=device)
    back = torch.arange(-(obs_horizon - 1), 1, device=device)  # (To,) offsets -To+1 .. 0
    ahead = torch.arange(action_horizon, device=device)  # (H,) offsets 0 .. H-1
    obs_index = torch.maximum(s[:, None] + back, first[:, None])  # (S, To)
    raw = s[:, None] + ahead  # (S, H)
    act_mask = raw <= last[:, None]
    act_index = torch.minimum(raw, last[:, None])
    return obs_index, act_index, act_mask


def episode_step_index(episode: torch.Tensor, num_episodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps laid out as padded episodes: index (E, T) into the flat arrays (0 at padding) and mask (E, T)."""
    lengths = torch.bincount(episode, minlength=num_episodes)  # (E,)
    starts = torch.cumsum(lengths, 0) - lengths
    t = torch.arange(episode.shape[0], device=episode.device) - starts[episode]  # (S,) position in its episode
    T = int(lengths.max()) if num_episodes else 0
    index = torch.zeros(num_episodes, T, dtype=torch.long, device=episode.device)
    mask = torch.zeros(num_episodes, T, dtype=torch.bool, device=episode.device)
    index[episode, t] = torch.arange(episode.shape[0], device=episode.device)
    mask[episode, t] = True
    return index, mask


class Windows:
    """Every step's training window of a dataset, as index tensors on the data's device (see window_index)."""

    def __init__(self, episode: torch.Tensor, obs_horizon: int, action_horizon: int):
        self.obs_index, self.act_index, self.act_mask = window_index(episode, obs_horizon, action_horizon)
        self.horizon = action_horizon
        E = int(episode.max()) + 1 if episode.numel() else 0
        self.step_index, self.step_mask = episode_step_index(episode, E)  # (E, T) each

    def gather(
        self, obs: torch.Tensor, act: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The windows of steps rows (...): obs (..., To, O), chunks (..., H, A) and their mask (..., H) (None when
        H = 1: a one-action chunk is never padded)."""
        mask = self.act_mask[rows] if self.horizon > 1 else None
        return obs[self.obs_index[rows]], act[self.act_index[rows]], mask

    def gather_episodes(
        self, obs: torch.Tensor, act: torch.Tensor, episodes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole episodes (B,) padded to the longest: windows (B, T, To, O), chunks (B, T, H, A) and the mask
        (B, T, H) of the chunk actions inside the episode (all False at padded steps)."""
        rows = self.step_index[episodes]  # (B, T)
        mask = self.act_mask[rows] & self.step_mask[episodes][..., None]
        return obs[self.obs_index[rows]], act[self.act_index[rows]], mask


class ActingState:
    """Per-environment memory of a policy that reads a history or acts in chunks.

    history (N, To, O) normalised observations, oldest first; queue (N, H, A) the current chunk (raw actions);
    ptr (N,) the next queued action; fresh (N,) environments whose episode starts at the next call (their
    history is refilled with the first observation and they plan at once). With temporal ensembling, recent
    (N, H, H, A) holds the chunks predicted 0 .. H-1 steps ago and count (N,) how many of them belong to the
    current episode.
    """

    def __init__(self, N: int, To: int, H: int, O: int, A: int, ensemble: bool, device, dtype):  # noqa: E741
        self.history = torch.zeros(N, To, O, device=device, dtype=dtype)
        self.queue = torch.zeros(N, H, A, device=device, dtype=dtype)
        self.ptr = torch.zeros(N, dtype=torch.long, device=device)
        self.fresh = torch.ones(N, dtype=torch.bool, device=device)
        self.recent = torch.zeros(N, H, H, A, device=device, dtype=dtype) if ensemble else None
        self.count = torch.zeros(N, dtype=torch.long, device=device) if ensemble else None

    @property
    def num_envs(self) -> int:
        return self.history.shape[0]

    def fits(self, N: int, device: torch.device) -> bool:
        return self.history.shape[0] == N and self.history.device == device

    def writable(self) -> ActingState:
        """State made in inference mode (``predict``) cloned before an update outside it."""
        if self.history.is_inference() and not torch.is_inference_mode_enabled():
            for k, v in vars(self).items():
                if torch.is_tensor(v):
                    setattr(self, k, v.clone())
        return self

    def mark_fresh(self, mask: torch.Tensor) -> None:
        """The environments where mask (N,) is true start an episode (in place: a captured graph sees it)."""
        self.writable()
        self.fresh.logical_or_(mask.to(self.fresh.device))

    def push(self, obs_n: torch.Tensor) -> torch.Tensor:
        """Append observations (N, O) to the history; returns the flat windows (N, To * O)."""
        N = obs_n.shape[0]
        shifted = torch.cat([self.history[:, 1:], obs_n[:, None]], dim=1)  # (N, To, O)
        refill = obs_n[:, None].expand_as(self.history)  # an episode's first window repeats its first observation
        self.history.copy_(torch.where(self.fresh[:, None, None], refill, shifted))
        return self.history.reshape(N, -1)

    def ensemble(self, chunk: torch.Tensor, m: float) -> torch.Tensor:
        """ACT's temporal ensembling: store chunk (N, H, A), return (N, A), the average of every stored chunk's
        action for this step, weighted exp(-m i) with i = 0 for the oldest prediction (Zhao et al. 2023)."""
        H = chunk.shape[1]
        self.recent.copy_(torch.cat([chunk[:, None], self.recent[:, :-1]], dim=1))  # (N, H, H, A), newest first
        self.count.copy_(torch.where(self.fresh, 1, (self.count + 1).clamp_max(H)))
        age = torch.arange(H, device=chunk.device)  # (H,) steps since each stored chunk was predicted
        now = self.recent[:, age, age]  # (N, H, A): the action each stored chunk planned for this step
        # exp(-m (count - 1 - age)) normalised: the oldest valid prediction gets the largest weight
        w = torch.exp(m * (age - (self.count[:, None] - 1)).to(chunk.dtype)) * (age < self.count[:, None])  # (N, H)
        return (w[..., None] * now).sum(1) / w.sum(1, keepdim=True)

    def next_action(self, need: torch.Tensor, chunk: torch.Tensor | None) -> torch.Tensor:
        """Queue chunk (N, H, A) where need (N,) is true (None: already written), return the next queued action."""
        N, _, A = self.queue.shape
        if chunk is not None:
            self.queue.copy_(torch.where(need[:, None, None], chunk, self.queue))
        self.ptr.copy_(torch.where(need, 0, self.ptr))
        action = self.queue.gather(1, self.ptr[:, None, None].expand(N, 1, A))[:, 0]  # (N, A)
        self.ptr.add_(1)
        return action
