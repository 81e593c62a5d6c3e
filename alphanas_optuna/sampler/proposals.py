"""Pure proposal functions on mask codes: random masks, flips, the nearest free mask, the
neighbourhood of the elites, the space-filling design and the choice of a mask to re-evaluate.

Every function takes its random numbers from the ``rng`` it is given and returns integer codes
(bit ``i`` = layer ``i``; see :mod:`alphanas_optuna.mask`). "Taken" masks are those evaluated or
being evaluated: never proposed while a free one is reachable.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "choose_reevaluation",
    "farthest",
    "flip_pattern",
    "flip_patterns",
    "initial_candidates",
    "keep_probabilities",
    "knowledge_gradient",
    "knowledge_gradient_new",
    "leader_to_confirm",
    "nearest_free",
    "neighbourhood",
    "popcount",
    "random_mask",
]

# Up to this many layers, the nearest free mask is found by enumerating the whole space.
MAX_ENUMERATE_LAYERS = 20
MAX_REDRAWS = 64
# Above this many flip patterns per elite, the neighbourhood is sampled, not enumerated.
MAX_PATTERNS = 8192
_PATTERNS: dict[tuple[int, int], np.ndarray] = {}


def popcount(values: np.ndarray) -> np.ndarray:
    """Number of set bits of each (non-negative) integer."""
    count = np.zeros(np.shape(values), dtype=np.int64)
    v = np.array(values, dtype=np.int64, copy=True)
    while np.any(v):
        count += v & 1
        v >>= 1
    return count


def keep_probabilities(n: int, keep_prob: float, bottom_bias: float) -> np.ndarray:
    """Chance that an initial mask keeps layer ``i``: ``keep_prob + bottom_bias * (0.5 - i /
    (n - 1))``, clipped to [0.02, 0.98]."""
    if n == 1:
        return np.array([1.0])
    tilt = bottom_bias * (0.5 - np.arange(n) / (n - 1))
    return np.clip(keep_prob + tilt, 0.02, 0.98)


def flip_pattern(n: int, rate: float, rng: np.random.RandomState) -> int:
    """Which bits a child flips: ``1 + Binomial(n - 1, (rate - 1) / (n - 1))`` distinct
    positions (at least one, ``rate`` on average)."""
    extra = 0
    if n > 1 and rate > 1.0:
        extra = int(rng.binomial(n - 1, min(1.0, (rate - 1.0) / (n - 1))))
    if extra == 0:
        return 1 << int(rng.randint(n))
    pattern = 0
    for p in rng.choice(n, size=1 + extra, replace=False):
        pattern |= 1 << int(p)
    return pattern


def random_mask(n: int, probs: np.ndarray, taken: set[int], rng: np.random.RandomState) -> int:
    """A free non-zero mask drawn bit by bit with ``probs``; the nearest free one if draws keep
    hitting taken masks."""
    code = 0
    for _ in range(MAX_REDRAWS):
        bits = rng.random_sample(n) < probs
        code = int(bits.astype(np.int64) @ (1 << np.arange(n, dtype=np.int64)))
        if code != 0 and code not in taken:
            return code
    return nearest_free(code or 1, n, taken, rng)


def nearest_free(code: int, n: int, taken: set[int], rng: np.random.RandomState) -> int:
    """A free non-zero mask nearest (in Hamming distance) to ``code``; random among ties. When
    every mask is taken, ``code`` itself (or the full mask)."""
    full = (1 << n) - 1
    if n <= MAX_ENUMERATE_LAYERS:
        space = np.arange(1, full + 1, dtype=np.int64)
        if taken:
            blocked = np.fromiter((m for m in taken if 0 < m <= full), dtype=np.int64)
            space = space[~np.isin(space, blocked)]
        if len(space) == 0:
            return code if 0 < code <= full else full
        distance = popcount(space ^ code)
        best = space[distance == distance.min()]
        return int(best[rng.randint(len(best))])
    for _ in range(100 * MAX_REDRAWS):
        candidate = int.from_bytes(rng.bytes((n + 7) // 8), "little") & full
        if candidate and candidate not in taken:
            return candidate
    return code if 0 < code <= full else full


def flip_patterns(n: int, radius: int) -> np.ndarray | None:
    """Every n-bit pattern with 1..radius bits set (None when there are more than
    :data:`MAX_PATTERNS`)."""
    key = (n, radius)
    if key not in _PATTERNS:
        if sum(math.comb(n, r) for r in range(1, radius + 1)) > MAX_PATTERNS:
            return None
        out = [
            sum(1 << i for i in combo)
            for r in range(1, radius + 1)
            for combo in itertools.combinations(range(n), r)
        ]
        _PATTERNS[key] = np.array(out, dtype=np.int64)
    return _PATTERNS[key]


def neighbourhood(
    elites: list[int],
    n: int,
    radius: int,
    taken: set[int],
    limit: int,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """Free non-zero masks within ``radius`` flips of an elite, and for each the index of the
    nearest elite (the earlier-listed on ties); at most ``limit``, drawn at random."""
    elite_codes = np.array(elites, dtype=np.int64)
    patterns = flip_patterns(n, radius)
    if patterns is None:
        k = rng.randint(len(elite_codes), size=limit)
        flips = rng.randint(1, radius + 1, size=limit)
        drawn = np.array(
            [sum(1 << int(i) for i in rng.choice(n, size=f, replace=False)) for f in flips],
            dtype=np.int64,
        )
        candidates = np.unique(elite_codes[k] ^ drawn)
    else:
        candidates = np.unique((elite_codes[:, None] ^ patterns[None, :]).ravel())
    candidates = candidates[candidates != 0]
    if taken:
        blocked = np.fromiter(taken, dtype=np.int64, count=len(taken))
        candidates = candidates[~np.isin(candidates, blocked)]
    if len(candidates) > limit:
        candidates = rng.choice(candidates, size=limit, replace=False)
    distance = popcount(candidates[:, None] ^ elite_codes[None, :])
    return candidates, np.argmin(distance, axis=1)


def initial_candidates(
    n: int, probs: np.ndarray, count: int, taken: set[int], rng: np.random.RandomState
) -> np.ndarray:
    """Up to ``count`` distinct free masks drawn from the initial distribution, shuffled."""
    draws = rng.random_sample((count, n)) < probs
    candidates = np.unique(draws.astype(np.int64) @ (1 << np.arange(n, dtype=np.int64)))
    candidates = candidates[candidates != 0]
    if taken:
        blocked = np.fromiter(taken, dtype=np.int64, count=len(taken))
        candidates = candidates[~np.isin(candidates, blocked)]
    return rng.permutation(candidates)


def farthest(candidates: np.ndarray, others: list[int]) -> int:
    """Index of the candidate whose nearest mask in ``others`` is farthest (Hamming): the next
    point of a space-filling design. The first candidate when there are no others."""
    if not others:
        return 0
    others_arr = np.array(others, dtype=np.int64)
    distance = popcount(candidates[:, None] ^ others_arr[None, :]).min(axis=1)
    return int(np.argmax(distance))


def leader_to_confirm(
    means: np.ndarray,
    sds: np.ndarray,
    counts: np.ndarray,
    available: np.ndarray,
    *,
    confirm_below: int = 2,
) -> int | None:
    """The leader (best posterior mean; higher is better, first on ties) if it should be
    measured again before anything else: it has had fewer than ``confirm_below`` evaluations
    (``counts``), its value is uncertain (``sds`` > 0: the objective is not deterministic) and
    it is ``available`` (not being evaluated elsewhere). Else None. The answer a study names
    should not be one lucky draw."""
    means = np.asarray(means, dtype=float)
    if len(means) == 0:
        return None
    best = int(np.argmax(means))
    if counts[best] < confirm_below and sds[best] > 0.0 and bool(available[best]):
        return best
    return None


def choose_reevaluation(
    means: np.ndarray,
    sds: np.ndarray,
    available: np.ndarray,
    rng: np.random.RandomState,
    *,
    z: float = 2.0,
    max_contenders: int = 5,
) -> int | None:
    """Which evaluated mask to measure again, or None if the best is already clear.

    The contenders are the masks whose posterior value (``means`` ± ``sds``, higher is better)
    is within ``z`` standard errors of the difference to the best mean (at most
    ``max_contenders``, best first). With fewer than two, nothing needs another evaluation.
    Otherwise one posterior draw per contender picks the one that looks best in this draw
    (Thompson sampling for the best arm): masks that may well be the best get measured, in
    proportion to how likely that is. A pick that is not ``available`` (being evaluated
    elsewhere) gives None.
    """
    means = np.asarray(means, dtype=float)
    sds = np.asarray(sds, dtype=float)
    if len(means) < 2:
        return None
    order = np.argsort(-means, kind="stable")
    best = order[0]
    gap = means[best] - means
    spread = np.sqrt(sds[best] ** 2 + sds**2)
    plausible = gap < z * spread
    plausible[best] = True
    contenders = order[plausible[order]][:max_contenders]
    if len(contenders) < 2:
        return None
    draw = means[contenders] + sds[contenders] * rng.standard_normal(len(contenders))
    pick = int(contenders[int(np.argmax(draw))])
    return pick if bool(available[pick]) else None


def knowledge_gradient(means: np.ndarray, sds: np.ndarray, noise_var: float) -> np.ndarray:
    """For each evaluated mask, the expected increase of the best posterior mean (higher is
    better) if it were measured once more: the knowledge gradient with independent normal
    beliefs (Frazier, Powell and Dayanik, 2008).

    One more evaluation, with noise variance ``noise_var``, moves mask ``i``'s posterior mean by
    a normal step of standard deviation ``s_i^2 / sqrt(s_i^2 + noise_var)`` (``s`` = ``sds``);
    the best mean rises only where the step crosses the best of the other masks, so the gain is
    ``t * f(-|mean_i - best_other| / t)`` with ``f(z) = z Phi(z) + phi(z)``. A mask far behind
    the best, or already well measured, gains little.
    """
    means = np.asarray(means, dtype=float)
    sds = np.asarray(sds, dtype=float)
    if len(means) < 2:
        return np.zeros(len(means))  # No rival to overtake.
    order = np.argsort(-means, kind="stable")
    best = means[order[0]]
    second = means[order[1]]
    other = np.where(np.arange(len(means)) == order[0], second, best)
    step = _step(sds, noise_var)
    return _expected_excess(-np.abs(means - other), step)


def knowledge_gradient_new(
    means: np.ndarray,
    sds: np.ndarray,
    p_feasible: np.ndarray,
    best: float,
    noise_var: float,
) -> np.ndarray:
    """The same gain for masks not evaluated yet, with predicted value ``means`` ± ``sds``: the
    expected amount by which one evaluation would lift the best posterior mean ``best`` above
    itself, ``t * f((mean - best) / t)``, times the chance that the mask is feasible (an
    infeasible one lifts nothing)."""
    step = _step(np.asarray(sds, dtype=float), noise_var)
    return np.asarray(p_feasible, dtype=float) * _expected_excess(
        np.asarray(means, dtype=float) - best, step
    )


def best_within(depths: np.ndarray, means: np.ndarray, n: int) -> np.ndarray:
    """For each size budget ``b = 0 .. n``, the best of ``means`` (higher is better) among the
    masks of at most ``b`` layers (``depths``); -inf where there is none."""
    best = np.full(n + 1, -np.inf)
    np.maximum.at(best, np.asarray(depths, dtype=np.int64), np.asarray(means, dtype=float))
    return np.maximum.accumulate(best)


def front_points(depths: np.ndarray, means: np.ndarray) -> list[int]:
    """Indices of the front over (value up, depth down), shallowest first: per depth the mask
    with the best of ``means`` (the first on ties), kept where it beats every shallower one."""
    by_depth: dict[int, int] = {}
    for i, (depth, value) in enumerate(zip(np.asarray(depths).tolist(), means)):
        if depth not in by_depth or value > means[by_depth[depth]]:
            by_depth[depth] = i
    front: list[int] = []
    for depth in sorted(by_depth):
        i = by_depth[depth]
        if not front or means[i] > means[front[-1]]:
            front.append(i)
    return front


def front_knowledge_gradient(
    means: np.ndarray,
    sds: np.ndarray,
    p_feasible: np.ndarray,
    depths: np.ndarray,
    best_within: np.ndarray,
    noise_var: float,
) -> np.ndarray:
    """:func:`knowledge_gradient_new` for a front over (value up, depth down): the expected lift,
    summed over every size budget ``b`` a mask of depth ``d`` meets (``b = d .. n``), of the best
    posterior mean of a mask of at most ``b`` layers, ``best_within[b]`` (non-decreasing in
    ``b``), times the chance that the mask is feasible. With the size steps of equal width (every
    layer is as large as the next), it is the expected gain of the area the front dominates."""
    means = np.asarray(means, dtype=float)
    step = _step(np.asarray(sds, dtype=float), noise_var)
    budgets = np.arange(len(best_within))
    meets = budgets[None, :] >= np.asarray(depths)[:, None]
    excess = _expected_excess(means[:, None] - best_within[None, :], step[:, None])
    return np.asarray(p_feasible, dtype=float) * np.where(meets, excess, 0.0).sum(axis=1)


def _step(sds: np.ndarray, noise_var: float) -> np.ndarray:
    """Standard deviation of the change of a posterior mean of sd ``sds`` after one evaluation
    with noise variance ``noise_var``."""
    var = sds**2
    total = var + max(noise_var, 0.0)
    return np.divide(var, np.sqrt(total), out=np.zeros_like(var), where=total > 0)


_erf = np.vectorize(math.erf, otypes=[float])


def _expected_excess(delta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``E[max(delta + scale * Z, 0)]`` for standard normal ``Z``: ``scale * f(delta / scale)``
    with ``f(z) = z Phi(z) + phi(z)``, and ``max(delta, 0)`` where ``scale`` is 0."""
    delta = np.asarray(delta, dtype=float)
    scale = np.asarray(scale, dtype=float)
    safe = np.where(scale > 0, scale, 1.0)
    z = delta / safe
    f = z * 0.5 * (1.0 + _erf(z / math.sqrt(2.0))) + np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return np.where(scale > 0, scale * f, np.maximum(delta, 0.0))
