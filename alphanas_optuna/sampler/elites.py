"""The one elite rule: which evaluated masks parent the next generation.

Given each candidate's loss vector (lower is better in every column, already sign-adjusted and,
for the noise-aware sampler, taken from the value model's estimates rather than single draws):
one column ranks by loss; several rank by non-dominated front, ties within the last front broken
by crowding distance (boundary points first), as in NSGA-II. Remaining ties go to the candidate
listed first.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["crowding_distance", "non_domination_rank", "select_elites"]


def select_elites(loss: np.ndarray, n: int) -> list[int]:
    """Row indices of the ``n`` best rows of ``loss`` (shape ``(m, k)``), in their order of
    selection."""
    loss = np.asarray(loss, dtype=float)
    m = len(loss)
    if loss.ndim != 2:
        raise ValueError(f"loss must be a matrix (candidates x objectives), got shape {loss.shape}")
    if m <= n:
        return list(range(m))
    if loss.shape[1] == 1:
        return [int(i) for i in np.argsort(loss[:, 0], kind="stable")[:n]]
    ranks = non_domination_rank(loss)
    chosen: list[int] = []
    for r in range(int(ranks.max()) + 1):
        front = [i for i in range(m) if ranks[i] == r]
        if len(chosen) + len(front) <= n:
            chosen.extend(front)
            if len(chosen) == n:
                break
            continue
        distance = crowding_distance(loss[front])
        order = sorted(range(len(front)), key=lambda j: (-distance[j], front[j]))
        chosen.extend(front[j] for j in order[: n - len(chosen)])
        break
    return chosen


def non_domination_rank(loss: np.ndarray) -> np.ndarray:
    """Front index of each row (0 = not dominated by any other row)."""
    loss = np.asarray(loss, dtype=float)
    m = len(loss)
    # dominated_by[i, j]: row j dominates row i.
    le = np.all(loss[None, :, :] <= loss[:, None, :], axis=2)
    lt = np.any(loss[None, :, :] < loss[:, None, :], axis=2)
    dominated_by = le & lt
    ranks = np.full(m, -1, dtype=int)
    left = np.ones(m, dtype=bool)
    rank = 0
    while left.any():
        current = left & ~np.any(dominated_by[:, left], axis=1)
        ranks[current] = rank
        left &= ~current
        rank += 1
    return ranks


def crowding_distance(loss: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance (boundary points infinite, others summed normalised gaps)."""
    loss = np.asarray(loss, dtype=float)
    m = len(loss)
    distance = np.zeros(m)
    for k in range(loss.shape[1]):
        order = np.argsort(loss[:, k], kind="stable")
        column = loss[order, k]
        width = column[-1] - column[0]
        if width <= 0 or not np.isfinite(width):
            continue
        distance[order[0]] = distance[order[-1]] = math.inf
        for j in range(1, m - 1):
            distance[order[j]] += (column[j + 1] - column[j - 1]) / width
    return distance
