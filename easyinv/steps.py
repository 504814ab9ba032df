"""Steps that methods and editors share, built on the core's step (:func:`easyinv.inversion.ddim_step`).

Below the methods: a method and an editor that need the same step import it from here, never from each other.
RF-Inversion's controlled steps, its η schedule and its seeded noise are used by ``baselines/rf_inversion.py`` and by
the RF-Inversion editor (``easyinv/editing/rf_edit.py``); :func:`query_time` by DDIM/Euler and EasyInv.
"""

from __future__ import annotations

import torch
from torch import Tensor

from easyinv.inversion import Grid, Level, ddim_step

__all__ = ["eta_schedule", "query_time", "rf_inversion_forward_step", "rf_inversion_reverse_step", "seeded_noise"]

NOISE_SALT = 21  # keeps y1 apart from other draws from the image's seed (a sampled VAE posterior draws it plain)


def query_time(grid: Grid, i: int, time: str) -> int | float:
    """The network time at which inversion step ``i`` evaluates its prediction: the target level's (``target``,
    DDIM's convention) or the source level's (``source``, the flow repositories' Euler inversion)."""
    return grid.timesteps[i] if time == "target" else grid.source_time(i)


def seeded_noise(like: Tensor, seeds: tuple[int, ...]) -> Tensor:
    """One N(0, I) sample per row of ``like`` ``(B, C, H, W)``, drawn on the CPU in float32 from that row's seed
    (salted) alone, so independent of the batch; returned in ``like``'s dtype and device."""
    draws = [torch.randn(like.shape[1:], dtype=torch.float32,
                         generator=torch.Generator().manual_seed((int(s) * 1_000_003 + NOISE_SALT) % (2**63 - 1)))
             for s in seeds]
    return torch.stack(draws).to(device=like.device, dtype=like.dtype)


def rf_inversion_forward_step(z: Tensor, v: Tensor, y1: Tensor, a_from: Level, a_to: Level, gamma: float) -> Tensor:
    """One controlled inversion step of ``z`` from ``a_from`` to ``a_to`` (σ increasing) with the network velocity
    ``v`` there: the drift v + γ·((y1 − z)/(1 − σ) − v) (the t := σ convention)."""
    return ddim_step(z, v + gamma * ((y1 - z) / (1.0 - a_from.sigma) - v), a_from, a_to)


def rf_inversion_reverse_step(z: Tensor, v: Tensor, y0: Tensor, a_from: Level, a_to: Level, eta: float) -> Tensor:
    """One controlled sampling step of ``z`` from ``a_from`` to ``a_to`` (σ decreasing) with the network velocity
    ``v`` there: the drift v + η·((z − y0)/σ − v), whose control term is the velocity of the straight path to
    ``y0`` (RF-Inversion's reverse ODE; an editor passes the target prompt's v and the source latent as y0)."""
    return ddim_step(z, v + eta * ((z - y0) / a_from.sigma - v), a_from, a_to)


def eta_schedule(steps: int, eta: float, start: float, stop: float) -> tuple[float, ...]:
    """η_i for sampling steps i = 0 … T−1: ``eta`` for int(start·T) ≤ i < int(stop·T), 0 elsewhere."""
    lo, hi = int(start * steps), int(stop * steps)
    return tuple(float(eta) if lo <= i < hi else 0.0 for i in range(steps))
