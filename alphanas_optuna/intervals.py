"""Confidence intervals of an accuracy measured on n examples.

:func:`wilson_interval` and :class:`TestResult` (accuracy, n and its 95% interval) are what Table 1
and the exported model report. Only the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TestResult", "t_interval", "wilson_interval"]


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``correct`` successes in ``n`` trials.

    With ``z=1.96`` it is the 95% confidence interval of an accuracy measured on ``n`` examples; it
    stays inside [0, 1] and is sensible at 0 or ``n`` correct.

    Raises:
        ValueError: ``n < 1``, ``correct`` outside ``[0, n]`` or ``z <= 0``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct!r}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z!r}")
    p = correct / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class TestResult:
    """Accuracy on a test split with its 95% Wilson score interval."""

    __test__ = False  # not a pytest test class

    correct: int
    n: int
    accuracy: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_counts(cls, correct: int, n: int, z: float = 1.96) -> TestResult:
        low, high = wilson_interval(correct, n, z)
        return cls(correct=correct, n=n, accuracy=correct / n, ci_low=low, ci_high=high)


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then the normal's 1.96).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% Student-t interval ``(mean, low, high)``; with one value
    the interval is unbounded (``-inf, inf``)."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, -math.inf, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * sd / math.sqrt(n)
    return mean, mean - half, mean + half
