"""What every inversion method checks and declares (base layer: imports nothing of the project).

The argument checks that several methods share (``method.num_steps``, ``method.time``, a refused ``method.blend``)
live here, below the methods, so no method imports another method's module for a helper.

:data:`DECLARATIONS` are the facts a method's class states about itself; the job reads ``unsupported_paths`` and
``needs_cfg`` before anything loads, and the test kit (``easyinv.testing.MethodContract``) reads all of them to test a
method by what it says; ``tests/test_every_method.py`` runs it on every method of the ``method`` config group without
a hand-kept list. :func:`check_declared` refuses a class that leaves one out, naming what to declare.
"""

from __future__ import annotations

__all__ = ["DECLARATIONS", "PATHS", "TIMES", "check_declared", "check_no_blend", "check_num_steps", "check_time",
           "missing_declarations"]

TIMES = ("target", "source")
PATHS = ("vp", "flow")  # the model paths a method can run on (a model config's ``path``; ``vp`` unless it says)

# name on the class → what to write there
DECLARATIONS: dict[str, str] = {
    "unsupported_paths": "`unsupported_paths: ClassVar[dict[str, str]]`, the model paths (vp, flow) its maths does "
                         "not hold on, each with the reason ({} when it runs on every path)",
    "needs_cfg": "`needs_cfg: ClassVar[str | None]`, why it needs the unconditional branch of classifier-free "
                 "guidance (None when it does not)",
    "exact": "`exact: ClassVar[bool]`, whether its round trip returns z_0 to round-off for any network output",
    "nfe_per_image": "`def nfe_per_image(self, T: int) -> tuple[int, int] | None`, its NFE per image (inversion, "
                     "reconstruction) at T steps and guidance 1 (None where it depends on the data)",
}


def check_num_steps(num_steps: int, minimum: int = 1) -> int:
    """``method.num_steps`` as an int >= ``minimum`` (the grid checks the upper bound against the schedule)."""
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < minimum:
        raise ValueError(f"method.num_steps must be an integer >= {minimum}, got {num_steps}")
    return int(num_steps)


def check_time(time: str) -> str:
    """``method.time`` as one of :data:`TIMES`."""
    if time not in TIMES:
        raise ValueError(f"method.time must be one of {list(TIMES)}, got {time!r}")
    return time


def check_no_blend(name: str, blend: object) -> None:
    """Methods that own their walk cannot take EasyInv's blend (the shared walk applies it)."""
    if blend is not None:
        raise ValueError(f"method.blend: {name} walks the grid itself; the EasyInv blend composes only with "
                         "ddim, renoise, fixed_point and the flow methods that apply it in their own walk "
                         "(rf_solver, fireflow, uni_inv, rf_inversion)")


def missing_declarations(cls: type) -> list[str]:
    """The names of :data:`DECLARATIONS` that ``cls`` does not state (inherited statements count)."""
    return [key for key in DECLARATIONS if not hasattr(cls, key)]


def check_declared(cls: type, name: str) -> type:
    """``cls``, or a TypeError naming, for ``method=name``, each declaration it leaves out and how to write it."""
    missing = missing_declarations(cls)
    if missing:
        raise TypeError(f"method={name}: {cls.__module__}.{cls.__qualname__} does not declare "
                        f"{', '.join(missing)}; give the class " + "; ".join(DECLARATIONS[k] for k in missing)
                        + " (easyinv/method_checks.py lists them)")
    bad = set(cls.unsupported_paths) - set(PATHS)  # type: ignore[attr-defined]
    if bad:
        raise TypeError(f"method={name}: unsupported_paths names {sorted(bad)}, not paths ({list(PATHS)})")
    return cls
