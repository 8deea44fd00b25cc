"""Camera observations: where the images lie in a flat observation, and the encoder that turns them into features.

An image is a ``Box`` of uint8 with 3 dimensions, (H, W, C) or (C, H, W) with C in {1, 3, 4}, alone or inside a
``Dict`` beside state entries. The flat observation keeps gymnasium's flatten order, so an image occupies
H * W * C consecutive numbers (its pixels, 0-255). Every policy class reads observations through
``Policy.normalize_obs``; with images there this becomes: state entries normalised by their statistics, each image
scaled by a constant (x / 255 - 0.5, no per-pixel statistics), optionally shifted at random while training
(``image_shift``: DrQ's augmentation, replicate-pad then crop; off by default), and encoded by a small conv net
(``vision_encoder``: a patchify stem by default, three stride-2 convolutions, or a ResNet-18 with GroupNorm and a
spatial softmax). The class's own networks see the concatenated features, so every class learns from pixels
without a line of its own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import nn


class ImageSlot(NamedTuple):
    offset: int  # first index in the flat observation
    shape: tuple[int, int, int]  # as stored: (H, W, C) or (C, H, W)
    channels_last: bool

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def chw(self) -> tuple[int, int, int]:
        h, w, c = self.shape if self.channels_last else (self.shape[1], self.shape[2], self.shape[0])
        return c, h, w


def is_image(box: spaces.Space) -> bool:
    return isinstance(box, spaces.Box) and box.dtype == np.uint8 and len(box.shape) == 3


def image_slot(box: spaces.Box, offset: int) -> ImageSlot:
    """Where an image Box lies; its channels must be the first or last axis (1, 3 or 4 of them)."""
    if box.shape[-1] in (1, 3, 4):
        return ImageSlot(offset, tuple(int(s) for s in box.shape), True)
    if box.shape[0] in (1, 3, 4):
        return ImageSlot(offset, tuple(int(s) for s in box.shape), False)
    raise ValueError(f"image {box.shape}: channels (1, 3 or 4) must be the first or the last axis")


def image_slots(space: spaces.Space) -> list[ImageSlot]:
    """Every image of an observation space, in flat order (empty for a low-dimensional space)."""
    entries = list(space.spaces.values()) if isinstance(space, spaces.Dict) else [space]
    slots, offset = [], 0
    for s in entries:
        if is_image(s):
            slots.append(image_slot(s, offset))
        offset += int(spaces.flatdim(s))
    return slots


def only_images(space: spaces.Space) -> bool:
    """Whether every entry is an image: the dataset is then kept as uint8, one byte per pixel."""
    entries = list(space.spaces.values()) if isinstance(space, spaces.Dict) else [space]
    return all(is_image(s) for s in entries)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) images, each moved by its own random integer offset in [-pad, pad] (edges replicated)."""
    B, C, H, W = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")  # (B, C, H + 2p, W + 2p)
    shift = torch.randint(0, 2 * pad + 1, (B, 2), device=images.device, generator=generator)
    rows = torch.arange(H, device=images.device)[None, :] + shift[:, :1]  # (B, H)
    cols = torch.arange(W, device=images.device)[None, :] + shift[:, 1:]  # (B, W)
    batch = torch.arange(B, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, F): three stride-2 3x3 convolutions with GroupNorm (as LeRobot's and Diffusion
    Policy's vision encoders use instead of BatchNorm, which mixes the samples of a batch), then a linear layer.
    Width 16 (then 32, 32 channels): at 1,024 images of 32 x 32 x 3 on one CPU thread it encodes 25,000 images/s
    against 5,800 at width 32; ``PatchEncoder``, the default, 3.7x as many as this one (docs/performance.md)."""

    def __init__(self, chw: tuple[int, int, int], features: int, width: int = 16):
        super().__init__()
        c, h, w = chw
        layers: list[nn.Module] = []
        for i in range(3):
            out = width * (2 if i else 1)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.GroupNorm(8, out), nn.ReLU()]
            c, h, w = out, (h + 1) // 2, (w + 1) // 2
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(c * h * w, features), nn.LayerNorm(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(images))


class PatchEncoder(nn.Module):
    """(B, C, H, W) -> (B, F): a patchify stem (a 4x4 convolution of stride 4, as ViT's and ConvNeXt's stems cut
    an image into patches), one 3x3 stride-2 convolution, GroupNorm after each, then a linear layer. At 32 x 32
    it sees the same 4x4 grid of features as ``ConvEncoder`` at a fraction of the multiply-adds: the stem reads
    each pixel once instead of through overlapping 3x3 windows at full resolution."""

    def __init__(self, chw: tuple[int, int, int], features: int, width: int = 32, patch: int | None = None):
        super().__init__()
        c, h, w = chw
        patch = patch or min(4, max(1, min(h, w) // 8))  # 4 from 32 pixels a side; smaller images, smaller patches
        if h < 2 * patch or w < 2 * patch:
            raise ValueError(f"the patch encoder needs images of at least {2 * patch} pixels a side, got {h} x {w}")
        self.conv = nn.Sequential(
            nn.Conv2d(c, width, patch, stride=patch),  # (B, width, H / p, W / p)
            nn.GroupNorm(8, width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),  # (B, width, H / 2p, W / 2p)
            nn.GroupNorm(8, width),
            nn.ReLU(),
            nn.Flatten(),
        )
        cells = ((h // patch + 1) // 2) * ((w // patch + 1) // 2)
        self.head = nn.Sequential(nn.Linear(width * cells, features), nn.LayerNorm(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(images))


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) -> (B, 2K): the expected image coordinates in [-1, 1] of K keypoint maps, a 1x1 convolution of
    the features (Levine et al. 2016; the head of Diffusion Policy's and LeRobot's ResNet encoders)."""

    def __init__(self, channels: int, keypoints: int = 32):
        super().__init__()
        self.keypoints = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        attention = torch.softmax(self.keypoints(x).flatten(2), dim=-1)  # (B, K, H W)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype),
            torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype),
            indexing="ij",
        )
        grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # (H W, 2)
        return (attention @ grid).flatten(1)  # (B, 2K)


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016): two 3x3 convolutions and a shortcut, GroupNorm in place of BatchNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(c_out // 16, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(c_out // 16, c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(c_out // 16, c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu(self.norm1(self.conv1(x)))
        return nn.functional.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """(B, C, H, W) -> (B, F): ResNet-18 (four stages of two basic blocks, 64-512 channels), untrained, with GroupNorm
    (16 channels a group) in place of BatchNorm and a spatial-softmax head in place of the pooling and classifier,
    as Diffusion Policy and LeRobot configure it. Written here: torchvision 0.28's wheel does not load beside the
    CPU build of the pinned torch (its compiled operators fail to register). Images under 64 pixels get the CIFAR
    stem (a 3x3 stride-1 first convolution, no max pooling), so that a 32-pixel image keeps a 4x4 feature map
    instead of 1x1. 11M parameters: for camera datasets of real robots; the package's 32-pixel tasks use
    ``ConvEncoder``."""

    def __init__(self, chw: tuple[int, int, int], features: int):
        super().__init__()
        c, h, w = chw
        if min(h, w) < 64:
            stem = [nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False), nn.GroupNorm(4, 64), nn.ReLU()]
        else:
            stem = [nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False), nn.GroupNorm(4, 64), nn.ReLU()]
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        blocks, c_in = [], 64
        for i, c_out in enumerate((64, 128, 256, 512)):
            blocks += [BasicBlock(c_in, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.trunk = nn.Sequential(*stem, *blocks)  # (B, 512, h', w')
        self.head = nn.Sequential(SpatialSoftmax(512), nn.Linear(64, features), nn.LayerNorm(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


VISION_ENCODERS = {"conv": ConvEncoder, "patch": PatchEncoder, "resnet18": ResNet18Encoder}


class ObservationFeatures(nn.Module):
    """Flat raw observations (N, O) -> features (N, F): normalised state entries, then each image's encoding."""

    def __init__(
        self, obs_dim: int, slots: list[ImageSlot], features: int = 64, encoder: str = "conv", shift: int | None = None
    ):
        super().__init__()
        self.slots = list(slots)
        # DrQ shifts 84-pixel images by up to 4 pixels: by default the same share of each image here
        self.shifts = [max(1, round(4 * min(s.chw[1:]) / 84)) if shift is None else shift for s in self.slots]
        is_pixel = torch.zeros(obs_dim, dtype=torch.bool)
        for s in self.slots:
            is_pixel[s.offset : s.offset + s.size] = True
        self.register_buffer("state_index", torch.nonzero(~is_pixel).flatten(), persistent=False)
        self.encoders = nn.ModuleList(VISION_ENCODERS[encoder](s.chw, features) for s in self.slots)
        self.dim = int(self.state_index.numel()) + features * len(self.slots)

    def forward(self, flat: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        idx = self.state_index
        parts = [(flat[:, idx] - mean[idx]) / std[idx]]  # (N, S)
        for slot, encoder, shift in zip(self.slots, self.encoders, self.shifts):
            img = flat[:, slot.offset : slot.offset + slot.size].reshape(-1, *slot.shape)
            if slot.channels_last:
                img = img.permute(0, 3, 1, 2)  # (N, C, H, W)
            img = img / 255.0 - 0.5
            if self.training and shift:
                img = random_shift(img, shift)
            parts.append(encoder(img))  # (N, F)
        return torch.cat(parts, dim=1)


def slots_to_json(slots: list[ImageSlot]) -> list[dict[str, Any]]:
    return [dict(offset=s.offset, shape=list(s.shape), channels_last=s.channels_last) for s in slots]


def slots_from_json(items: list[dict[str, Any]] | None) -> list[ImageSlot]:
    return [
        ImageSlot(int(i["offset"]), tuple(int(x) for x in i["shape"]), bool(i["channels_last"])) for i in items or []
    ]
