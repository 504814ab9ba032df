"""The shared core: noise levels and their grid, the first-order step, the denoiser contract and the inversion walk.

Every method (DDIM, EasyInv, ReNoise, fixed-point, …) is written against this module only, so the same code runs on
SD-1.x, SD-XL, the closed-form Gaussian models and flow-matching models. It imports nothing but torch.

One update for every Gaussian path z = α·x₀ + σ·ε: the network's output is turned into (x̂₀, ε̂) at the latent's own
level and the step to the next level is z' = α'·x̂₀ + σ'·ε̂ (:func:`ddim_step`). On the variance-preserving path
(α = √ᾱ, σ = √(1−ᾱ), ε-prediction) that is DDIM with η = 0; on the rectified-flow path (α = 1 − σ, velocity
v = ε − x₀) it is exactly the Euler step z + (σ' − σ)·v. A VP level is written as its ᾱ (a float), a level of any
other path as a :class:`Level`.

Conventions (algorithms.md §1): inversion step ``i`` moves the latent from the *source* level
``s = t_i - Δ`` to the *target* level ``t_i``; the noise is predicted at the target timestep ``t_i`` on the source
latent. ``ᾱ_s`` is ``final_alpha_cumprod`` when ``s < 0``. Reconstruction walks the same grid backwards with the
alphas swapped, so the symmetry rule of §1.2 holds by construction.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import torch
from torch import Tensor

__all__ = [
    "BlendWalk",
    "Blender",
    "Denoiser",
    "Denoisers",
    "FiniteWatch",
    "Grid",
    "Inversion",
    "Level",
    "Method",
    "NullTextDenoiser",
    "PhaseTimer",
    "StepContext",
    "TrajectoryWatch",
    "as_level",
    "ddim_step",
    "euler_dt",
    "invert",
    "invert_with",
    "reconstruct",
    "reconstruct_with",
]


# --------------------------------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------------------------------


PREDICTIONS = ("epsilon", "v_prediction", "flow")


@dataclass(frozen=True)
class Level:
    """A noise level of the Gaussian path z = α·x₀ + σ·ε, and what the network predicts there.

    ``prediction``: ``epsilon`` (ε), ``v_prediction`` (v = α·ε − σ·x₀, VP models such as SD-2) or ``flow`` (the
    rectified-flow velocity v = ε − x₀ on the path α = 1 − σ). :meth:`split` turns an output into (x̂₀, ε̂) at this
    level, which must be the level of the latent it was predicted for or is stepped from.
    """

    alpha: float
    sigma: float
    prediction: str = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"Level.prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    @classmethod
    def flow(cls, sigma: float) -> Level:
        """The rectified-flow level σ: z = (1 − σ)·x₀ + σ·ε, velocity prediction."""
        return cls(alpha=1.0 - float(sigma), sigma=float(sigma), prediction="flow")

    def split(self, z: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂₀, ε̂) of ``z`` at this level from the network's output ``pred``."""
        if self.prediction == "epsilon":
            return (z - self.sigma * pred) / self.alpha, pred
        if self.prediction == "v_prediction":  # α² + σ² = 1 on the VP path
            return self.alpha * z - self.sigma * pred, self.sigma * z + self.alpha * pred
        return z - self.sigma * pred, z + (1.0 - self.sigma) * pred  # flow: v = ε − x₀, z = x₀ + σ·v


@dataclass(frozen=True)
class Grid:
    """Network time inputs in inversion order with the source and target level of each step.

    A level is ᾱ (a float) on the VP path, or a :class:`Level`. ``timesteps[i]`` is the network's time input at step
    ``i``'s target level (an integer timestep for SD, a float for flow models: σ or 1000·σ as the network wants);
    ``time0`` is the input at the first source level. Every off-by-one decision of the sampler is made here, once
    (algorithms.md §1.2).
    """

    timesteps: tuple[int | float, ...]
    alpha_src: tuple[float | Level, ...]
    alpha_tgt: tuple[float | Level, ...]
    time0: int | float = 0

    def __post_init__(self) -> None:
        if not (len(self.timesteps) == len(self.alpha_src) == len(self.alpha_tgt)):
            raise ValueError("Grid: timesteps, alpha_src and alpha_tgt must have the same length")

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        return len(self.timesteps)

    def levels(self) -> tuple[tuple[float | Level, ...], tuple[int | float, ...]]:
        """Level and network time of each noise level k = 0 … T, for methods that evaluate ε on a level's own latent
        at its own time (BDIA, BELM; more-methods.md §0): a_0 = ᾱ_src[0], a_k = ᾱ_tgt[k−1]; τ_0 = ``time0`` (0 for
        SD), τ_k = t_{k−1}.
        """
        if not self.timesteps:
            return (), ()
        return (self.alpha_src[0], *self.alpha_tgt), (self.time0, *self.timesteps)

    def source_time(self, i: int) -> int | float:
        """The network time of step ``i``'s source level (the latent's own level in inversion)."""
        return self.time0 if i == 0 else self.timesteps[i - 1]

    def time_at(self, sigma: float) -> float:
        """The network time input of any flow level σ, on or between this grid's levels (a midpoint, a paper's own
        time feeding): the grid's own time at one of its levels, exactly, else σ times the grid's constant time/σ
        scale (1 for ``model=gaussian_flow``, 1000 for SD3 and FLUX). Refuses a VP grid, whose integer timesteps
        have no time between two levels that the network was trained on, and a flow grid without one scale."""
        levels, times = self.levels()
        if not levels or not all(isinstance(lv, Level) and lv.prediction == "flow" for lv in levels):
            raise ValueError("Grid.time_at needs a non-empty flow grid (Level.flow levels); the VP path's integer "
                             "timesteps have no network time between two levels")
        sigma = float(sigma)
        if not 0.0 <= sigma <= 1.0:
            raise ValueError(f"Grid.time_at: a flow level must be in [0, 1], got {sigma}")
        for lv, t in zip(levels, times, strict=True):
            if lv.sigma == sigma:
                return float(t)
        return sigma * self._time_scale()

    def _time_scale(self) -> float:
        """The grid's time/σ ratio, the same at every level σ > 0 to float32 rounding, or a ValueError."""
        levels, times = self.levels()
        ratios = [float(t) / lv.sigma for lv, t in zip(levels, times, strict=True) if lv.sigma > 0]
        if not ratios or max(ratios) - min(ratios) > 1e-6 * max(abs(r) for r in ratios):
            raise ValueError(f"Grid.time_at: the grid's time inputs are not one constant multiple of σ ({ratios})")
        return ratios[-1]

    @classmethod
    def from_sigmas(cls, sigmas: Sequence[float], times: Sequence[float]) -> Grid:
        """The rectified-flow grid over ascending noise levels σ_0 < … < σ_T (σ_0 = 0 is the data) with the network's
        time input at each level; step ``i`` goes σ_i → σ_{i+1}. Inversion walks it upwards, sampling downwards."""
        sig, ts = [float(s) for s in sigmas], [float(t) for t in times]
        if len(sig) != len(ts) or not sig:
            raise ValueError("Grid.from_sigmas: one time per level, at least one level")
        if any(b <= a for a, b in zip(sig, sig[1:], strict=False)) or sig[0] < 0 or sig[-1] > 1:
            raise ValueError(f"Grid.from_sigmas: levels must increase within [0, 1], got {sig}")
        levels = [Level.flow(s) for s in sig]
        return cls(timesteps=tuple(ts[1:]), alpha_src=tuple(levels[:-1]), alpha_tgt=tuple(levels[1:]), time0=ts[0])

    @classmethod
    def from_schedule(
        cls,
        alphas_cumprod: Sequence[float] | Tensor,
        steps: int,
        *,
        steps_offset: int = 1,
        final_alpha_cumprod: float | None = None,
    ) -> Grid:
        """Build the "leading" DDIM grid of diffusers for ``steps`` inference steps.

        ``alphas_cumprod`` is the training schedule (length = num_train_timesteps). ``final_alpha_cumprod`` is the
        ᾱ used below timestep 0: ``alphas_cumprod[0]`` for ``set_alpha_to_one=False`` (SD), 1.0 otherwise.
        For SD-1.4 at 50 steps: timesteps 1, 21, ..., 981; the first step goes ᾱ_0 → ᾱ_1.
        """
        ac = [float(a) for a in (alphas_cumprod.tolist() if isinstance(alphas_cumprod, Tensor) else alphas_cumprod)]
        n_train = len(ac)
        if steps < 0 or steps > n_train:
            raise ValueError(f"method.num_steps must be in [0, {n_train}], got {steps}")
        if steps == 0:  # the VAE-only ceiling: no diffusion step at all
            return cls(timesteps=(), alpha_src=(), alpha_tgt=())
        delta = n_train // steps
        ts = [i * delta + steps_offset for i in range(steps)]
        if ts[-1] >= n_train:  # diffusers issue #10003
            raise ValueError(f"steps={steps} with steps_offset={steps_offset} indexes past timestep {n_train - 1}")
        final = ac[0] if final_alpha_cumprod is None else float(final_alpha_cumprod)
        src = tuple(ac[t - delta] if t - delta >= 0 else final for t in ts)
        tgt = tuple(ac[t] for t in ts)
        return cls(timesteps=tuple(ts), alpha_src=src, alpha_tgt=tgt)


def ddim_step(z: Tensor, eps: Tensor, a_src: float | Level, a_tgt: float | Level) -> Tensor:
    """The first-order step: move ``z`` from its level ``a_src`` to ``a_tgt`` along the network output ``eps``.

    z' = α_t·x̂₀ + σ_t·ε̂ with (x̂₀, ε̂) from ``eps`` at ``z``'s own level. With ᾱ floats it is DDIM with η = 0 (Song et
    al. 2021, Eq. 12), bit-identical to diffusers' DDIM schedulers; between two flow levels it is Euler,
    z + (σ_t − σ_s)·v, the same number written as diffusers' ``FlowMatchEulerDiscreteScheduler`` computes it.
    Inversion calls it with (source, target), reconstruction with (target, source). Affine in ``eps`` (used by the
    fixed-point and ReNoise averaging).
    """
    if isinstance(a_src, Level) or isinstance(a_tgt, Level):
        src, tgt = as_level(a_src), as_level(a_tgt)
        if src.prediction == tgt.prediction == "flow":
            return z + euler_dt(src.sigma, tgt.sigma, z.dtype == torch.float64) * eps
        x0, noise = src.split(z, eps)
        return tgt.alpha * x0 + tgt.sigma * noise
    sq_s, sq1_s, sq_t, sq1_t = _coefficients(a_src, a_tgt, z.dtype == torch.float64)
    x0 = (z - sq1_s * eps) / sq_s
    return sq_t * x0 + sq1_t * eps


@lru_cache(maxsize=4096)
def euler_dt(s: float, t: float, double: bool) -> float:
    """σ_t − σ_s rounded as the Euler scheduler computes it: in float32 (float64 for float64 latents)."""
    ctype = torch.float64 if double else torch.float32
    return float(torch.tensor(t, dtype=ctype) - torch.tensor(s, dtype=ctype))


def as_level(a: float | Level) -> Level:
    """A level; ᾱ is the VP level (√ᾱ, √(1−ᾱ)) with ε-prediction."""
    return a if isinstance(a, Level) else Level(alpha=float(a) ** 0.5, sigma=(1.0 - float(a)) ** 0.5)


@lru_cache(maxsize=4096)
def _coefficients(a_src: float, a_tgt: float, double: bool) -> tuple[float, float, float, float]:
    """√ᾱ_s, √(1−ᾱ_s), √ᾱ_t, √(1−ᾱ_t), computed once per grid step, off the device.

    They are rounded exactly as diffusers' schedulers round them (float32 arithmetic; float64 for float64 latents), so
    a trajectory is bit-identical to DDIMScheduler/DDIMInverseScheduler rather than drifting by float rounding; as
    Python floats they are exact copies of those values and cost no host-to-device copy inside the step loop.
    """
    ctype = torch.float64 if double else torch.float32
    a_s, a_t = torch.tensor(a_src, dtype=ctype), torch.tensor(a_tgt, dtype=ctype)
    return tuple(float(v) for v in (a_s**0.5, (1 - a_s) ** 0.5, a_t**0.5, (1 - a_t) ** 0.5))


# --------------------------------------------------------------------------------------------------------------------
# Denoiser contract
# --------------------------------------------------------------------------------------------------------------------


def network_time(t: int | float) -> int | float:
    """A grid's time input as the network takes it: integer timesteps stay integers (SD), float times stay floats."""
    return t if isinstance(t, float) else int(t)


class Denoiser(ABC):
    """Noise prediction ε(z, t) for a bound batch of B images (prompts, guidance, dtype are bound by the adapter).

    ``z`` is ``(B', C, H, W)``; ``rows`` (length B') says which images of the bound batch the rows belong to
    (default: all B in order), so a method can evaluate a subset, e.g. rows that have not converged yet.

    The counters are the only place NFE is counted: ``nfe[b]`` is the number of latent rows evaluated for image
    ``b`` (a CFG call costs 2), ``seconds`` the time spent inside the network. On CUDA that time is taken with CUDA
    events, read only when ``seconds`` is asked for, so timing never stalls the queue between two network calls.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.nfe = torch.zeros(batch_size, dtype=torch.long)
        self.calls = 0
        self.observer: Callable[[int | float], None] | None = None  # told each call's time (an editor's hooks)
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @property
    def seconds(self) -> float:
        """Time inside ``predict`` so far (waits for pending CUDA work once, when read)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
            self._events.clear()
        return self._seconds

    def __call__(self, z: Tensor, t: int, rows: Tensor | None = None) -> Tensor:
        if rows is None:
            if z.shape[0] != self.batch_size:
                raise ValueError(f"denoiser bound to batch {self.batch_size}, got {z.shape[0]} rows")
            rows = torch.arange(self.batch_size)
        elif len(rows) != z.shape[0]:
            raise ValueError(f"rows has {len(rows)} entries for {z.shape[0]} latent rows")
        if self.observer is not None:
            self.observer(t)
        return self._counted(lambda: self.predict(z, network_time(t), rows), rows, z.is_cuda)

    def _counted(self, call: Callable[[], tuple[Tensor, int | Tensor]], rows: Tensor, cuda: bool) -> Tensor:
        """Run one network call, adding its time and its NFE (an int, or one per row) to the counters."""
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            eps, cost = call()
            end.record()
            self._events.append((start, end))
        else:
            began = time.perf_counter()
            eps, cost = call()
            self._seconds += time.perf_counter() - began
        self.calls += 1
        cost = torch.as_tensor(cost, dtype=torch.long).cpu().expand(len(rows)).clone()  # int, or one per row
        self.nfe.index_add_(0, rows.cpu(), cost)
        return eps

    @abstractmethod
    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int | Tensor]:
        """Return ε for ``z`` at timestep ``t`` (same shape and dtype as ``z``) and the NFE cost per row.

        The cost is one int for all rows, or a ``(B',)`` tensor when rows differ (CFG skipped where it is a no-op).
        """

    def reset_counters(self) -> None:
        self.nfe.zero_()
        self._seconds = 0.0
        self._events.clear()
        self.calls = 0


class NullTextDenoiser(Denoiser):
    """ε whose unconditional branch takes an explicit, differentiable embedding u (null-text inversion).

    Called plainly it is the conditional branch alone (w = 1). ``uncond(z, t, u, rows)`` is ε(z, t; u) for the given
    rows with autograd through u (the network stays frozen); ``guided(z, t, u, w)`` is ε(z; u) + w (ε(z; c) − ε(z; u))
    in one call of 2 rows per image. ``u`` is float32 ``(B, *E)``, cast at the network boundary.
    """

    @abstractmethod
    def initial_embedding(self) -> Tensor:
        """The unconditional embedding the optimisation starts from, one per row, float32 (the model's null)."""

    @abstractmethod
    def _uncond(self, z: Tensor, t: int, u: Tensor, rows: Tensor) -> Tensor: ...

    @abstractmethod
    def _both(self, z: Tensor, t: int, u: Tensor) -> tuple[Tensor, Tensor]: ...

    def uncond(self, z: Tensor, t: int, u: Tensor, rows: Tensor) -> Tensor:
        return self._counted(lambda: (self._uncond(z, network_time(t), u, rows), 1), rows, z.is_cuda)

    def guided(self, z: Tensor, t: int, u: Tensor, guidance_scale: float) -> Tensor:
        def call() -> tuple[Tensor, int]:
            eps_c, eps_u = self._both(z, network_time(t), u)
            return eps_u + guidance_scale * (eps_c - eps_u), 2

        return self._counted(call, torch.arange(self.batch_size), z.is_cuda)


class PhaseTimer:
    """Wall time per phase, CUDA-synchronised so asynchronous kernels are charged to the phase that queued them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------------------------------------------------
# Methods and the shared inversion walk
# --------------------------------------------------------------------------------------------------------------------


class FiniteWatch:
    """The first step at which each row's trajectory held a non-finite value (-1: never).

    One ``isfinite`` reduction per step over the whole batch, kept on the latent's device and read back once by the
    caller, so watching costs no synchronisation inside the step loop.
    """

    def __init__(self, batch_size: int, device: torch.device | str = "cpu"):
        self.first = torch.full((batch_size,), -1, dtype=torch.long, device=device)

    def see(self, z: Tensor, step: int) -> None:
        bad = ~torch.isfinite(z).flatten(1).all(dim=1)
        self.first = torch.where((self.first < 0) & bad, torch.full_like(self.first, step), self.first)

    def steps(self) -> list[int]:
        return self.first.cpu().tolist()


class TrajectoryWatch(FiniteWatch):
    """A :class:`FiniteWatch` that also keeps the latent after chosen steps (``keep``), e.g. the reconstruction's
    midpoint that the paper decodes (EasyInv Fig. 2); nothing is copied at the other steps."""

    def __init__(self, batch_size: int, device: torch.device | str = "cpu", keep: Sequence[int] = ()):
        super().__init__(batch_size, device)
        self.keep = frozenset(int(k) for k in keep)
        self.latents: dict[int, Tensor] = {}

    def see(self, z: Tensor, step: int) -> None:
        super().see(z, step)
        if step in self.keep:
            self.latents[step] = z.detach().clone()


@dataclass(frozen=True)
class StepContext:
    """What a method step may read besides its input latent.

    ``z_query``: the latent on which the step's *first* noise prediction is evaluated. It equals the step input
    except under EasyInv's released blend, which predicts on the unblended latent (algorithms.md §2.2 A).
    ``z0``: the clean latent of each row (ReNoise's regularisation reference). ``seeds``: one seed per row.
    """

    z_query: Tensor
    z0: Tensor
    seeds: tuple[int, ...]


class Blender(Protocol):
    """A modifier that mixes latents at chosen iterations (EasyInv, ``easyinv/blend.py``)."""

    variant: str  # "released" (blend the input before the step) or "algorithm" (blend the output)

    def iterations(self, T: int) -> frozenset[int]: ...  # noqa: N803

    def mix(self, current: Tensor, previous: Tensor) -> Tensor: ...


class Method(Protocol):
    """One inversion step of a method; the walk (:func:`invert`) is shared by all methods."""

    name: str
    num_steps: int  # T, the number of inversion (and reconstruction) steps
    blend: Blender | None

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor: ...


@dataclass
class Inversion:
    """Result of an inversion: z_T ``(B, C, H, W)``, the trajectory ``[z_0, ..., z_T]``, NFE per image, and what a
    method's own reconstruction needs besides z_T (``state``: a second latent, per-step embeddings, …; one leading
    batch dimension per tensor)."""

    z_T: Tensor  # noqa: N815
    trajectory: list[Tensor] = field(repr=False)
    nfe: Tensor
    state: dict[str, Tensor] = field(default_factory=dict, repr=False)
    backward_passes: Tensor | None = None  # autograd passes through the network per image (None: none)

    def state_bytes(self) -> int:
        """Bytes a reconstruction needs per image: z_T plus the method's state."""
        b = max(int(self.z_T.shape[0]), 1)
        return sum(int(t.nelement() * t.element_size()) for t in (self.z_T, *self.state.values())) // b


class BlendWalk:
    """Where and how an inversion walk applies a method's blend (EasyInv): one place for the shared walk
    (:func:`invert`) and for the methods that walk themselves, so the blend means the same under both.

    Per iteration ``i``: ``z_in = step_input(i, z)`` is the latent the step starts from (under ``released``, inside
    the window, ``z`` mixed with the previous step's input; the step's first prediction stays on the unblended
    ``z``), and ``step_output(i, z_next, z)`` the latent the step hands on (under ``algorithm``, inside the window,
    the step's output mixed with its unblended input). Without a blend both return their latent unchanged.
    """

    def __init__(self, blend: Blender | None, T: int):  # noqa: N803 - the paper's symbol
        self.blend = blend
        self.iterations = blend.iterations(T) if blend is not None else frozenset()
        self._prev_in: Tensor | None = None

    def step_input(self, i: int, z: Tensor) -> Tensor:
        """The latent iteration ``i`` steps from (call once per iteration, in order)."""
        z_in = z
        if i in self.iterations and self.blend.variant == "released":
            assert self._prev_in is not None  # blended iterations satisfy i > 0
            z_in = self.blend.mix(z, self._prev_in)
        self._prev_in = z_in
        return z_in

    def step_output(self, i: int, z_next: Tensor, z: Tensor) -> Tensor:
        """The latent iteration ``i`` hands on, from its output ``z_next`` and its unblended input ``z``."""
        if i in self.iterations and self.blend.variant == "algorithm":
            return self.blend.mix(z_next, z)
        return z_next


def invert(
    method: Method,
    eps: Denoiser,
    z0: Tensor,
    grid: Grid,
    seeds: Sequence[int] | None = None,
    watch: FiniteWatch | None = None,
) -> Inversion:
    """Walk the grid from z_0 to z_T with ``method.step``, applying ``method.blend`` where its window says.

    ``watch`` sees the latent after every step (step ``i + 1`` is the latent after iteration ``i``).

    The blend is applied here, not in the methods, so EasyInv composes with any method (algorithms.md §2.2):
    ``released`` mixes the step's input with the previous step's (possibly blended) input after the first noise
    prediction was taken on the unblended latent; ``algorithm`` mixes the step's output with its input.
    """
    if seeds is None:
        seeds = tuple(range(z0.shape[0]))
    seeds = tuple(int(s) for s in seeds)
    walk = BlendWalk(getattr(method, "blend", None), grid.T)
    nfe_start = eps.nfe.clone()
    z = z0
    trajectory = [z0]
    for i in range(grid.T):
        z_in = walk.step_input(i, z)
        z_next = method.step(eps, z_in, i, grid, StepContext(z_query=z, z0=z0, seeds=seeds))
        z = walk.step_output(i, z_next, z)
        trajectory.append(z)
        if watch is not None:
            watch.see(z, i + 1)
    return Inversion(z_T=z, trajectory=trajectory, nfe=eps.nfe - nfe_start)


def reconstruct(
    eps: Denoiser, z_T: Tensor, grid: Grid, watch: FiniteWatch | None = None  # noqa: N803
) -> list[Tensor]:
    """Deterministic DDIM sampling from z_T back to z_0 over the same grid; returns ``[z_T, ..., z_0]``.

    ``watch`` sees the latent after every step, numbered 1 … T in sampling order."""
    z = z_T
    trajectory = [z]
    for n, i in enumerate(reversed(range(grid.T)), start=1):
        z = ddim_step(z, eps(z, grid.timesteps[i]), grid.alpha_tgt[i], grid.alpha_src[i])
        trajectory.append(z)
        if watch is not None:
            watch.see(z, n)
    return trajectory


# --------------------------------------------------------------------------------------------------------------------
# Methods that own their walk
# --------------------------------------------------------------------------------------------------------------------


class Denoisers:
    """The denoisers of one batch, bound to its prompts: what a method may ask for, and the one place their cost is
    added up.

    ``for_phase()`` is ε at the protocol's guidance of the phase the runner is in (``phase``: "invert" or
    "reconstruct"); ``at(w, negative_prompts)`` is any other guidance or negative prompt a method's own walk needs
    (negative-prompt inversion, pivots at w = 1). Every denoiser handed out is counted in the phase it was made in.
    """

    def __init__(
        self,
        make: Callable[[float, Sequence[str] | None], Denoiser],
        prompts: Sequence[str],
        guidance: dict[str, float],
        null_text: Callable[[], NullTextDenoiser] | None = None,
    ):
        self._make = make
        self._null_text = null_text
        self.prompts = list(prompts)
        self.guidance = dict(guidance)
        self.phase = "invert"
        self._made: list[tuple[str, Denoiser]] = []
        self._bound: dict[str, Denoiser] = {}
        self.observer: Callable[[int | float], None] | None = None  # handed to every denoiser made from now on

    def at(self, guidance: float, negative_prompts: Sequence[str] | None = None) -> Denoiser:
        eps = self._make(float(guidance), negative_prompts)
        eps.observer = self.observer
        self._made.append((self.phase, eps))
        return eps

    def null_text(self) -> NullTextDenoiser:
        """ε with an optimisable unconditional embedding (null-text inversion), counted like the others."""
        if self._null_text is None:
            raise ValueError("this model offers no unconditional embedding to optimise (null-text inversion)")
        eps = self._null_text()
        self._made.append((self.phase, eps))
        return eps

    def for_phase(self) -> Denoiser:
        """The protocol's ε for the current phase (one instance per phase, so a walk may ask repeatedly)."""
        if self.phase not in self._bound:
            self._bound[self.phase] = self.at(self.guidance[self.phase])
        return self._bound[self.phase]

    def nfe(self, phase: str) -> Tensor:
        """NFE per image in ``phase`` (zeros when it made no network call, e.g. the VAE-only ceiling)."""
        counts = [eps.nfe for p, eps in self._made if p == phase]
        return torch.stack(counts).sum(0) if counts else torch.zeros(len(self.prompts), dtype=torch.long)

    @property
    def seconds(self) -> float:
        return sum(eps.seconds for _, eps in self._made)

    @property
    def calls(self) -> int:
        return sum(eps.calls for _, eps in self._made)


class OwnWalk(Protocol):
    """A method whose inversion is not one latent in, one latent out per step (EDICT, BDIA, BELM, NPI): it walks
    the grid itself and reconstructs from its own state."""

    name: str
    num_steps: int

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion: ...

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor: ...


def invert_with(
    method: Method | OwnWalk,
    den: Denoisers,
    z0: Tensor,
    grid: Grid,
    seeds: Sequence[int],
    watch: FiniteWatch | None = None,
) -> Inversion:
    """The method's own inversion if it has one, else the shared walk with the protocol's ε."""
    own = getattr(method, "invert", None)
    if own is not None:
        return own(den, z0, grid, tuple(int(s) for s in seeds), watch)
    return invert(method, den.for_phase(), z0, grid, seeds, watch=watch)  # type: ignore[arg-type]


def reconstruct_with(
    method: Method | OwnWalk, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None = None
) -> Tensor:
    """z_0 from the method's own reconstruction if it has one, else DDIM sampling from z_T."""
    own = getattr(method, "reconstruct", None)
    if own is not None:
        return own(den, inversion, grid, watch)
    return reconstruct(den.for_phase(), inversion.z_T, grid, watch=watch)[-1]
