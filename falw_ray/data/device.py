"""Data held on the trial's device: normalised once, batched by index, augmented on the device.

No per-sample Python runs in the hot loop: a batch is one gather from a resident tensor,
and random crop / flip are batched tensor ops (the airbench way).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from ..lazy import F, torch
from .arrays import DatasetArrays


@dataclass
class Augment:
    crop_pad: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.crop_pad > 0 or self.flip


def to_device(data: DatasetArrays, x: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 images (or float32 signals) -> normalised float tensor on ``device`` (converted there, so only
    the raw bytes cross the bus). Mean and std are per channel, broadcast over (H, W) or L; ``dtype``
    defaults to float32."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    per_channel = (1, -1) + (1,) * (t.ndim - 2)
    mean = torch.tensor(data.mean, device=device).view(per_channel)
    std = torch.tensor(data.std, device=device).view(per_channel)
    return ((t.float() / data.scale - mean) / std).to(dtype or torch.float32).contiguous()


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad then crop back to size at a random offset per image, as one gather."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


def augment(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Random crop and flip of an image batch; a signal batch (N, C, L) is refused, never cropped or flipped."""
    if aug.active and x.ndim != 4:
        raise ValueError(f"augment: random crop / flip need images (N, C, H, W), got shape {tuple(x.shape)}")
    if aug.crop_pad:
        x = random_crop(x, aug.crop_pad, gen)
    if aug.flip:
        x = random_flip(x, gen)
    return x


def index_batches(n: int, batch_size: int, gen: torch.Generator | None, shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Index tensors (on the CPU) covering 0..n-1 once; the permutation comes from ``gen``."""
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    yield from order.split(batch_size)
