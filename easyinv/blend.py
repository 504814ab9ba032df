"""EasyInv's latent blend (EasyInv Eq. 16; Alg. 1): z̄ = η·z + (1 − η)·z_prev at selected iterations.

The blend lives apart from any method so the shared walk (:func:`easyinv.inversion.invert`) can apply it on top of
DDIM, ReNoise or fixed-point steps (``method=renoise +method/blend=easyinv``). Two placements exist
(algorithms.md §2.2): ``released`` — the experiment code that produced the paper's numbers — blends the step's
input with the previous step's input after the first noise prediction was taken on the unblended latent;
``algorithm`` — ICML Alg. 1 / ``example.py`` — blends the step's output with its input.

Window (algorithms.md §2.3): iteration ``i`` is selected when ``start·T < i < end·T`` and ``i > 0``, evaluated in IEEE
doubles as the released code does (``(inject_steps + inject_len) * T > i > inject_steps * T``); ``end`` is the
released ``inject_steps + inject_len``. SD-1.x defaults (0.05, 0.25) at T = 50 select 3..12.

An interval that selects no iteration at the walk's T is an error (raised by :meth:`Blend.iterations`), not a
silent no-op: a blend that never fires would report DDIM numbers under the EasyInv name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["VARIANTS", "Blend", "check_blend_args"]

VARIANTS = ("released", "algorithm")


def _as_interval(interval: Sequence[float], key: str) -> tuple[float, float]:
    try:
        values = tuple(float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"{key}.interval must be two numbers [start, end], got {interval!r}") from None
    if len(values) != 2:
        raise ValueError(f"{key}.interval must be two numbers [start, end], got {list(values)}")
    return values  # type: ignore[return-value]


def _as_steps(steps: Sequence[int] | None, key: str) -> tuple[int, ...] | None:
    if steps is None:
        return None
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise ValueError(f"{key}.steps must be a list of iteration indices or null, got {steps!r}")
    values = tuple(steps)
    if not values:
        raise ValueError(f"{key}.steps must be a non-empty list of iteration indices or null, got []")
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"{key}.steps must hold integers >= 1 (iteration 0 has no previous latent), got {s!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{key}.steps must not repeat an iteration, got {list(values)}")
    return tuple(sorted(values))


def check_blend_args(
    key: str, eta: float, interval: Sequence[float], k: int, steps: Sequence[int] | None, variant: str
) -> tuple[float, tuple[float, float], int, tuple[int, ...] | None, str]:
    """Validate and normalise the blend hyperparameters; ``key`` names the config node in error messages.

    Hydra hands lists over as ``ListConfig``: they come back as tuples.
    """
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"{key}.eta must be in [0, 1], got {eta}")
    start, end = _as_interval(interval, key)
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"{key}.interval must satisfy 0 <= start < end <= 1, got [{start}, {end}]")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"{key}.k must be an integer >= 1 (blend every k-th iteration of the window), got {k}")
    if variant not in VARIANTS:
        raise ValueError(f"{key}.variant must be one of {list(VARIANTS)}, got {variant!r}")
    return eta, (start, end), int(k), _as_steps(steps, key), str(variant)


@dataclass(frozen=True)
class Blend:
    """EasyInv's blend: which iterations mix latents, and how (Eq. 16, algorithms.md §2.2-2.3).

    ``eta``: weight η of the current latent (η = 1 is a no-op, bit for bit). ``interval``: (start, end) fractions of
    T, open at both ends. ``k``: keep every k-th selected iteration (k = 2 at the SD-1.x defaults: 3, 5, ..., 11).
    ``steps``: explicit iteration indices, replacing ``interval`` and ``k``. ``variant``: released | algorithm.
    """

    eta: float = 0.5
    interval: tuple[float, float] = (0.05, 0.25)
    k: int = 1
    steps: tuple[int, ...] | None = None
    variant: str = "released"
    config_key: str = field(default="method.blend", repr=False, compare=False)

    def __post_init__(self) -> None:
        eta, interval, k, steps, variant = check_blend_args(
            self.config_key, self.eta, self.interval, self.k, self.steps, self.variant
        )
        object.__setattr__(self, "eta", eta)
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "variant", variant)

    def window(self, T: int) -> tuple[int, ...]:  # noqa: N803 - the paper's symbol
        """All iterations i with ``start·T < i < end·T`` and ``i > 0`` (before thinning by k)."""
        start, end = self.interval
        return tuple(i for i in range(T) if end * T > i > start * T and i > 0)

    def iterations(self, T: int) -> frozenset[int]:  # noqa: N803
        """Iterations of a T-step walk at which the blend fires; raises if there are none."""
        if self.steps is not None:
            bad = [s for s in self.steps if s > T - 1]
            if bad:
                raise ValueError(f"{self.config_key}.steps must be in [1, {T - 1}] for T={T}, got {bad}")
            return frozenset(self.steps)
        selected = self.window(T)[:: self.k]
        if not selected:
            start, end = self.interval
            raise ValueError(
                f"{self.config_key}.interval [{start}, {end}] selects no iteration at T={T} "
                f"(needs an integer i > 0 with {start * T} < i < {end * T}); widen it or give explicit steps"
            )
        return frozenset(selected)

    def mix(self, current: Tensor, previous: Tensor) -> Tensor:
        """η·current + (1 − η)·previous, row by row (shapes ``(B, C, H, W)``)."""
        return self.eta * current + (1.0 - self.eta) * previous
