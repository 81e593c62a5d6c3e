"""What is known about each evaluated mask: its evaluations, their values and feasibility.

Pure Python and NumPy on mask codes; :mod:`alphanas_optuna.sampler.digest` fills it from a
study's trials, and both the sampler and :func:`alphanas_optuna.winner` read it.
"""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np

from alphanas_optuna.sampler.model import (
    NOISE_PRIOR_DOF,
    NOISE_PRIOR_VARIANCE,
    ValueModel,
    pooled_variance,
)

__all__ = ["COLLAPSE_SDS", "Estimates", "Evidence", "MaskRecord", "estimate", "t_quantile"]

# A pruned run of a mask that was feasible on another run is taken for a failed fine-tune (one
# that fell to the majority class on that seed) when its value lies more than this many noise
# standard deviations (of the gap between one draw and the mean of the others; the Student-t
# quantile of the same tail while the noise estimate rests on few degrees of freedom) below the
# mean of the mask's feasible runs, and then counts against the mask's feasibility only. Nearer, it
# is a draw just under the floor of a mask close to it, and counts as measured: leaving such
# draws out makes masks on the floor look better than they are (at lambda 0.01, where the
# optimum sits on the floor, that raised the regret by 79%; see BENCHMARKS.md).
COLLAPSE_SDS = 4.0


@dataclass
class MaskRecord:
    """The evaluations of one mask.

    Attributes:
        code: The mask's integer code.
        trials: Trial ids of every evaluation (feasible or not), in the order seen.
        numbers: Their trial numbers.
        n_feasible: Evaluations that were feasible (COMPLETE).
        n_infeasible: Evaluations that were not (PRUNED).
        count: Evaluations with a value that counts: every feasible one, and infeasible ones
            that recorded what they measured, but for failed fine-tunes (see
            :meth:`Evidence.records`).
        mean: Mean of those values ("higher is better" sign).
        ssd: Their sum of squared deviations from ``mean`` (Welford).
        extra: The other objectives of the last feasible evaluation (two-objective studies:
            the parameter count, which does not vary between evaluations).
        representative: Trial id of the last feasible evaluation (what the elites cache stores).
        groups: ``count``, ``mean`` and ``ssd`` of the values per fidelity (the settings an
            evaluation was made under; see :meth:`Evidence.add`).
        last_fidelity: The fidelity of the latest value (by trial number ``last_number``).
        feasible_values: ``[count, mean, ssd]`` of the feasible evaluations' values.
        feasible_groups: The same per fidelity.
        pruned_values: ``(value, fidelity)`` of each infeasible evaluation with a value.

    ``count``, ``mean``, ``ssd`` and ``groups`` of a mask with both feasible and pruned values
    depend on the study's noise estimate: they are current as :meth:`Evidence.records` returns
    them.
    """

    code: int
    trials: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    n_feasible: int = 0
    n_infeasible: int = 0
    count: int = 0
    mean: float = 0.0
    ssd: float = 0.0
    extra: tuple[float, ...] = ()
    representative: int | None = None
    groups: dict[str | None, list[float]] = field(default_factory=dict)
    last_fidelity: str | None = None
    last_number: int = -1
    feasible_values: list[float] = field(default_factory=lambda: [0, 0.0, 0.0])
    feasible_groups: dict[str | None, list[float]] = field(default_factory=dict)
    pruned_values: list[tuple[float, str | None]] = field(default_factory=list)
    _counted: tuple[float, float] = field(default=(math.inf, -math.inf), repr=False)

    def count_values(self, limit: float) -> None:
        """Set ``count``, ``mean``, ``ssd`` and ``groups`` from the feasible values and the
        pruned ones that count: all of them while no value is feasible, else those at most
        ``limit`` times ``sqrt(1 + 1 / k)`` under the mean of the ``k`` feasible values (with
        ``limit`` a multiple of the noise sd, that is the multiple of the sd of the gap between
        one draw and the mean of ``k`` others). Also notes the range of limits that would count
        the same values, so that :meth:`counted_under` can tell when to count again."""
        stats = list(self.feasible_values)
        groups = {g: list(v) for g, v in self.feasible_groups.items()}
        k, mean, _ = self.feasible_values
        scale = math.sqrt(1.0 + 1.0 / k) if k else 1.0
        lo, hi = -math.inf, math.inf
        for value, fidelity in self.pruned_values:
            gap = (mean - value) / scale if k else -math.inf
            if gap <= limit:
                _welford(stats, value)
                _welford(groups.setdefault(fidelity, [0, 0.0, 0.0]), value)
                lo = max(lo, gap)
            else:
                hi = min(hi, gap)
        self.count, self.mean, self.ssd = stats
        self.groups = groups
        self._counted = (lo, hi)

    def counted_under(self, limit: float) -> bool:
        """Whether :meth:`count_values` with ``limit`` would count the values counted now."""
        lo, hi = self._counted
        return lo <= limit and (limit < hi or hi == math.inf)

    @property
    def n_evaluations(self) -> int:
        return self.n_feasible + self.n_infeasible

    @property
    def eligible(self) -> bool:
        """Whether the mask can be an elite or the answer: feasible at least as often as not."""
        return self.n_feasible > 0 and self.n_feasible >= self.n_infeasible

    def shifted_mean(self, offsets: dict[str | None, float]) -> float:
        """Mean of the values with each fidelity's offset taken off (the mean, with none;
        a fidelity without an offset, unnamed ones among them, has none)."""
        if not offsets:
            return self.mean
        total = sum(k * (m - offsets.get(g, 0.0)) for g, (k, m, _) in self.groups.items())
        return total / self.count

    def shares(self, fidelities: list[str | None]) -> np.ndarray:
        """The share of this mask's values measured under each of ``fidelities``."""
        return np.array([self.groups.get(g, (0,))[0] / self.count for g in fidelities])


def _merge(stats: list[float], other: list[float]) -> None:
    """Fold the values summarised by ``other`` into ``stats`` (both ``[count, mean, ssd]``)."""
    k1, m1, s1 = stats
    k2, m2, s2 = other
    k = k1 + k2
    if k1 == 0:
        stats[:] = [k2, m2, s2]
    else:
        stats[:] = [k, (k1 * m1 + k2 * m2) / k, s1 + s2 + k1 * k2 / k * (m1 - m2) ** 2]


def _by_index(record: MaskRecord, index: dict[str | None, int]) -> dict[int, list[float]]:
    """``record``'s ``[count, mean, ssd]`` per fidelity index (``index``; unnamed and unlisted
    fidelities are the reference's, 0), groups of one index merged."""
    merged: dict[int, list[float]] = {}
    for g, stats in record.groups.items():
        _merge(merged.setdefault(index.get(g, 0), [0, 0.0, 0.0]), stats)
    return merged


def t_quantile(z: float, dof: float) -> float:
    """The Student-t quantile with ``dof`` degrees of freedom of the normal quantile ``z`` (the
    same tail), by the expansion of Abramowitz and Stegun (1964), 26.7.5: a gap measured with
    an estimated standard deviation must be wider than ``z`` of them to be as unlikely, the
    more so the fewer degrees of freedom the estimate rests on. Within a few percent of the
    tables from about 5 degrees of freedom for ``z`` near 2, and from about 10 for ``z`` = 4;
    with fewer it is rough but large (``z`` = 4: 12 at 5 degrees of freedom, 42 at 2.5), which
    is what a test needs while the noise estimate is uncertain."""
    z2 = z * z
    g = (
        (z2 + 1) * z / 4,
        ((5 * z2 + 16) * z2 + 3) * z / 96,
        (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384,
        ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160,
    )
    return z + sum(gi / dof ** (i + 1) for i, gi in enumerate(g))


def _welford(stats: list[float], value: float) -> None:
    """Fold ``value`` into ``[count, mean, ssd]``."""
    stats[0] += 1
    delta = value - stats[1]
    stats[1] += delta / stats[0]
    stats[2] += delta * (value - stats[1])


@dataclass
class _NoisePool:
    """Running sums of the masks' feasible values, for :meth:`Evidence.noise_sd`: their sums of
    squared deviations and degrees of freedom over each mask's values (``ssd``, ``dof``) and
    within each fidelity (``ssd_within``, ``dof_within``: a study resumed under other settings
    moves every value by an offset, which is not noise), and the number, sum and sum of squares
    of the masks' means, taken from ``shift`` (the first value) so that they do not cancel."""

    shift: float
    ssd: float = 0.0
    dof: float = 0.0
    ssd_within: float = 0.0
    dof_within: float = 0.0
    masks: int = 0
    total: float = 0.0
    squares: float = 0.0

    def fold(self, stats: list[float], group: list[float], sign: float) -> None:
        """Add (``sign`` 1) or take away (-1) one mask's ``[count, mean, ssd]`` (``stats``)
        and those of its values under one fidelity (``group``)."""
        k, m, d = stats
        if group[0]:
            self.ssd_within += sign * group[2]
            self.dof_within += sign * (group[0] - 1)
        if k:
            self.ssd += sign * d
            self.dof += sign * (k - 1)
            self.masks += int(sign)
            self.total += sign * (m - self.shift)
            self.squares += sign * (m - self.shift) ** 2


class Evidence:
    """Per mask length, every evaluated mask's :class:`MaskRecord`.

    **Fidelities.** An evaluation may name the settings it was made under (``fidelity``: a
    study resumed with more training steps, say, measures every mask higher than before). The
    newest named fidelity (that of the latest feasible evaluation with a value) is the
    reference; with several, :meth:`model_data` gives a row per mask and fidelity, the value
    model fits one offset per earlier fidelity, and the estimates put every value on the
    reference's scale (without the model, :meth:`paired_offsets` gives the offsets that masks
    measured under several fidelities show). Evaluations that name none (trials added by hand,
    or by an objective that does not record it) count as the reference's. With one named
    fidelity, or none, everything is as if there were none.
    """

    def __init__(self) -> None:
        self.by_length: dict[int, dict[int, MaskRecord]] = {}
        # Per length: every named fidelity with a value, in the order they first appeared, and
        # (number, fidelity) of the latest feasible evaluation with a value and a named
        # fidelity, and of the latest with any value and a named fidelity.
        self._fidelities: dict[int, dict[str, None]] = {}
        self._latest_feasible: dict[int, tuple[int, str]] = {}
        self._latest: dict[int, tuple[int, str]] = {}
        # Per length: masks with both feasible and pruned values (whose counted values depend on
        # the noise estimate), whether they need recounting, and the running sums of the
        # feasible values for that estimate.
        self._mixed: dict[int, dict[int, MaskRecord]] = {}
        self._stale: set[int] = set()
        self._pool: dict[int, _NoisePool] = {}
        # Per length: masks evaluated once, infeasible that time with a value (see
        # :meth:`once_failed`), and the lowest feasible value.
        self._once_failed: dict[int, set[int]] = {}
        self._lowest_feasible: dict[int, float] = {}

    def add(
        self,
        n: int,
        code: int,
        trial_id: int,
        number: int,
        *,
        feasible: bool,
        value: float | None,
        extra: tuple[float, ...] = (),
        fidelity: str | None = None,
    ) -> MaskRecord:
        """Fold one evaluation in. ``value`` is "higher is better"; None or non-finite when the
        evaluation measured nothing usable. ``fidelity`` names the settings it was made under
        (None: unnamed, one fidelity of its own)."""
        records = self.by_length.setdefault(n, {})
        record = records.get(code)
        if record is None:
            record = records[code] = MaskRecord(code)
        record.trials.append(trial_id)
        record.numbers.append(number)
        if feasible:
            record.n_feasible += 1
            record.representative = trial_id
            record.extra = extra
        else:
            record.n_infeasible += 1
        # A run that measured a value under the floor may have failed on its seed; one stopped
        # before it measured anything (over the parameter limit, say) would be stopped again.
        once_failed = self._once_failed.setdefault(n, set())
        measured = value is not None and math.isfinite(value)
        if record.n_feasible == 0 and record.n_infeasible == 1 and measured:
            once_failed.add(code)
        else:
            once_failed.discard(code)
        if measured:
            if feasible:
                self._lowest_feasible[n] = min(value, self._lowest_feasible.get(n, math.inf))
                pool = self._pool.setdefault(n, _NoisePool(value))
                group = record.feasible_groups.setdefault(fidelity, [0, 0.0, 0.0])
                pool.fold(record.feasible_values, group, -1.0)
                _welford(record.feasible_values, value)
                _welford(group, value)
                pool.fold(record.feasible_values, group, 1.0)
            else:
                record.pruned_values.append((value, fidelity))
            if record.pruned_values and record.feasible_values[0]:
                self._mixed.setdefault(n, {})[code] = record
                record._counted = (math.inf, -math.inf)  # its values changed: count again
            else:
                record.count_values(math.inf)
            if self._mixed.get(n):
                self._stale.add(n)  # the noise estimate, or this mask's values, changed
            if number >= record.last_number:
                record.last_number, record.last_fidelity = number, fidelity
            if fidelity is not None:
                self._fidelities.setdefault(n, {})[fidelity] = None
                for latest, applies in ((self._latest, True), (self._latest_feasible, feasible)):
                    if applies and number >= latest.get(n, (-1, ""))[0]:
                        latest[n] = (number, fidelity)
        return record

    def records(self, n: int) -> dict[int, MaskRecord]:
        """The masks of length ``n``. A mask's values (``count``, ``mean``, ``ssd``,
        ``groups``) are its feasible evaluations' and its infeasible ones' (a draw under the
        study's floor is evidence of where the mask lies), but for failed fine-tunes: where the
        mask was feasible on other evaluations, a pruned value more than :data:`COLLAPSE_SDS`
        standard deviations below their mean (of the gap between one draw and the mean of the
        others, from the noise estimate :meth:`noise_sd`) counts against its feasibility
        only. A brief fine-tune sometimes collapses to the majority class on one
        seed of a mask that trains on others; averaged in, its value near chance would sink the
        mask's estimate and, through its spread, the noise estimate of every mask."""
        if n in self._stale:
            self._stale.discard(n)
            limit = self._collapse_limit(n)
            for record in self._mixed.get(n, {}).values():
                if not record.counted_under(limit):
                    record.count_values(limit)
        return self.by_length.get(n, {})

    def once_failed(self, n: int) -> set[int]:
        """Codes of the masks of length ``n`` evaluated once, and infeasible that time with a
        measured value (an accuracy under the floor, say)."""
        return self._once_failed.get(n, set())

    def collapsed_once(self, n: int) -> set[int]:
        """Codes of the :meth:`once_failed` masks of length ``n`` whose value lies more than
        :data:`COLLAPSE_SDS` standard deviations of the noise (the Student-t quantile of that
        tail, as :meth:`records` widens it) below every feasible value: a run that fell far
        under the floor, as a fine-tune that collapsed on its seed does, rather than just under
        it. Empty until repeated runs of some mask have differed: a seed that changes nothing
        would collapse the same way again."""
        codes = self._once_failed.get(n)
        lowest = self._lowest_feasible.get(n)
        if not codes or lowest is None or self._repeats(n)[0] <= 0.0:
            return set()
        bar = lowest - self._collapse_limit(n)
        records = self.by_length[n]
        return {c for c in codes if records[c].pruned_values[0][0] < bar}

    def _collapse_limit(self, n: int) -> float:
        """How far under (the Student-t quantile of :data:`COLLAPSE_SDS` noise standard
        deviations) a run falls before it is taken for a failed fine-tune; infinite while no
        noise estimate sets a scale."""
        sd, dof = self.noise_sd(n)
        return t_quantile(COLLAPSE_SDS, dof) * sd if dof > 0 else math.inf

    def record(self, n: int, code: int) -> MaskRecord | None:
        """The record of one mask, for its evaluations and feasibility counts, without
        recounting its values (:meth:`records` does that)."""
        return self.by_length.get(n, {}).get(code)

    def noise_sd(self, n: int) -> tuple[float, float]:
        """Standard deviation of one evaluation's noise and the degrees of freedom it rests on:
        the spread of the feasible values of masks of length ``n`` evaluated more than once
        (:meth:`_repeats`: within each fidelity, where several are named), pooled with a prior
        as the value model's (:func:`~alphanas_optuna.sampler.model.noise_variance`): a quarter
        of the variance of the feasible masks' means, worth half a degree of freedom. ``(inf,
        0)`` while that is 0 (no repeats that differ, and no two masks whose means differ):
        nothing sets a scale."""
        pool = self._pool.get(n, _NoisePool(0.0))
        ssd, dof = self._repeats(n)
        masks = pool.masks
        spread = max(pool.squares / masks - (pool.total / masks) ** 2, 0.0) if masks > 1 else 0.0
        prior_dof = NOISE_PRIOR_DOF if masks > 1 else 0.0
        # As noise_variance pools them, without its rule for deterministic objectives (whose
        # masks are never both feasible and pruned).
        variance = pooled_variance(ssd, dof, NOISE_PRIOR_VARIANCE * spread, prior_dof)
        if variance <= 0.0:
            return math.inf, 0.0
        return math.sqrt(variance), dof + prior_dof

    def _repeats(self, n: int) -> tuple[float, float]:
        """The sum of squared deviations of repeated feasible values of masks of length ``n``
        and its degrees of freedom: within each fidelity where more than one is named (unnamed
        values then form one more; an offset between settings is not noise), else over every
        value (unnamed ones count as the named fidelity's; see the class docstring)."""
        pool = self._pool.get(n)
        if pool is None:
            return 0.0, 0.0
        if len(self._fidelities.get(n, ())) > 1:
            return pool.ssd_within, pool.dof_within
        return pool.ssd, pool.dof

    def fidelities(self, n: int) -> list[str | None]:
        """The named fidelities of the values of masks of length ``n``, the reference first
        (see the class docstring), then the others in the order they first appeared; ``[None]``
        when none is named."""
        seen = self._fidelities.get(n)
        if not seen:
            return [None] if self.records(n) else []
        newest = self._latest_feasible.get(n, self._latest[n])[1]
        return [newest] + [g for g in seen if g != newest]

    def paired_offsets(self, n: int) -> dict[str | None, float]:
        """Each earlier fidelity's offset without a value model: a two-way fit of the masks'
        values, ``value = mask effect + fidelity offset`` (least squares weighted by the counts,
        the reference's offset 0), over masks feasible at least once. Only masks measured under
        more than one fidelity inform it, so a fidelity that shares no mask with the reference,
        directly or through other fidelities, gets no offset (its values are taken as they
        are). Unnamed values count as the reference's. Empty with one fidelity."""
        fidelities = self.fidelities(n)
        if len(fidelities) <= 1:
            return {}
        index = {g: i for i, g in enumerate(fidelities)}  # unnamed: the reference's (0)
        masks = []
        for r in self.records(n).values():
            if r.count == 0 or r.n_feasible == 0:
                continue
            merged = _by_index(r, index)
            if len(merged) > 1:
                masks.append([(i, k, m) for i, (k, m, _) in merged.items()])
        # Fidelities linked to the reference through masks measured under both.
        linked = {0}
        grown = True
        while grown:
            grown = False
            for rows in masks:
                seen = {i for i, _, _ in rows}
                if seen & linked and not seen <= linked:
                    linked |= seen
                    grown = True
        free = sorted(linked - {0})
        if not free:
            return {}
        # With the mask effects solved out, the offsets solve a small linear system (the normal
        # equations): for each fidelity, its values' weighted residuals from the fitted mask
        # effects plus its offset sum to 0.
        column = {f: c for c, f in enumerate(free)}
        a = np.zeros((len(free), len(free)))
        b = np.zeros(len(free))
        for rows in masks:
            if not {i for i, _, _ in rows} & linked:
                continue
            total = sum(k for _, k, _ in rows)
            mean = sum(k * m for _, k, m in rows) / total
            for i, k, m in rows:
                if i not in column:
                    continue
                b[column[i]] += k * (m - mean)
                a[column[i], column[i]] += k
                for j, kj, _ in rows:
                    if j in column:
                        a[column[i], column[j]] -= k * kj / total
        gamma = np.linalg.solve(a, b)
        return {fidelities[f]: float(gamma[column[f]]) for f in free}

    def model_data(
        self, n: int, leave_out: AbstractSet[int] = frozenset()
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(codes, counts, means, ssd, fidelity) of masks of length ``n``: the value model's
        data, a row per mask (per mask and fidelity where there are several; ``fidelity`` is
        the row's index in :meth:`fidelities`, 0 for the reference).

        Every mask feasible at least once enters with the values it recorded. A mask that
        recorded a value but was never feasible (one that collapses to the majority class, say)
        enters as a single evaluation at the lowest mean of the feasible masks, or at its own
        mean where that is higher: what is known is that it is worse than the feasible masks,
        by an unknown margin (its value is censored by the study's floor). Taken as measured,
        its value near chance would dominate the fit among the feasible masks, which a linear
        model cannot follow; left out, the model learns nothing about the layers that every
        feasible mask keeps, and keeps proposing children that drop them, most of which turn
        out infeasible. Nothing enters while no mask was feasible, nor a never-feasible mask in
        ``leave_out`` (one whose failure looks like a failed fine-tune rather than the mask's
        own doing; see :meth:`~alphanas_optuna.sampler.digest.StudyDigest.lapses`).
        """
        records = [r for r in self.records(n).values() if r.count > 0]
        feasible = [r for r in records if r.n_feasible > 0]
        never = [r for r in records if r.n_feasible == 0 and r.code not in leave_out]
        never = never if feasible else []
        fidelities = self.fidelities(n)
        if len(fidelities) <= 1:
            codes, counts, means, ssd = Evidence.arrays(feasible + never)
            k = len(feasible)
            counts[k:] = 1.0
            means[k:] = np.maximum(means[k:], min((r.mean for r in feasible), default=0.0))
            ssd[k:] = 0.0
            return codes, counts, means, ssd, np.zeros(len(codes), dtype=np.int64)
        index = {g: i for i, g in enumerate(fidelities)}  # unnamed: the reference's (0)
        rows = []
        for r in feasible:
            rows += [(r.code, *stats, i) for i, stats in sorted(_by_index(r, index).items())]
        # A censored mask enters once, under the fidelity of its latest value, at the lowest
        # feasible mean of that fidelity (or the reference's, where that fidelity has none).
        floors: dict[int, float] = {}
        for _, _, mean, _, i in rows:
            floors[i] = min(mean, floors.get(i, math.inf))
        for r in never:
            i = index.get(r.last_fidelity, 0)
            i = i if i in floors else min(floors)
            rows.append((r.code, 1, max(r.groups[r.last_fidelity][1], floors[i]), 0.0, i))
        if not rows:  # nothing feasible yet, under any fidelity
            empty = np.zeros(0)
            return np.zeros(0, dtype=np.int64), empty, empty, empty, np.zeros(0, dtype=np.int64)
        columns = list(zip(*rows))
        counts, means, ssd = (np.array(c, dtype=float) for c in columns[1:4])
        return (
            np.array(columns[0], dtype=np.int64),
            counts,
            means,
            ssd,
            np.array(columns[4], dtype=np.int64),
        )

    @staticmethod
    def arrays(records: list[MaskRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(codes, counts, means, ssd) of ``records``."""
        return (
            np.array([r.code for r in records], dtype=np.int64),
            np.array([r.count for r in records], dtype=float),
            np.array([r.mean for r in records], dtype=float),
            np.array([r.ssd for r in records], dtype=float),
        )


@dataclass
class Estimates:
    """Posterior value of each eligible mask of one length (see
    :class:`~alphanas_optuna.sampler.model.ValueModel`).

    Attributes:
        records: The eligible masks (feasible at least as often as not).
        means: Posterior mean value of each ("higher is better" sign).
        sds: Its posterior standard deviation (0 without a model).
        model: The fitted value model, or None (too few masks, or pooling off).
        fitted_rows: ``(count, mean)`` of the model's data row of each :meth:`Evidence.once_failed`
            mask, as it was fitted (reference fidelity only): what
            :meth:`~alphanas_optuna.sampler.model.ValueModel.predict_left_out` takes out.
    """

    records: list[MaskRecord]
    means: np.ndarray
    sds: np.ndarray
    model: ValueModel | None
    fitted_rows: dict[int, tuple[float, float]] = field(default_factory=dict)


def estimate(
    evidence: Evidence, n: int, *, pooled: bool = True, leave_out: AbstractSet[int] = frozenset()
) -> Estimates:
    """Estimates for the eligible masks of length ``n``: with ``pooled``, from the value model
    fitted to :meth:`Evidence.model_data` (without the never-feasible masks in ``leave_out``);
    else (or while the model has too few masks) each mask's own mean, its values of earlier
    fidelities shifted by :meth:`Evidence.paired_offsets` where masks measured under several
    fidelities give one."""
    records = [r for r in evidence.records(n).values() if r.eligible and r.count > 0]
    model = None
    fitted_rows: dict[int, tuple[float, float]] = {}
    if pooled:
        data = evidence.model_data(n, leave_out)
        model = ValueModel.fit(n, *data)
        once = evidence.once_failed(n)
        if model is not None and once:
            fitted_rows = {
                int(c): (float(k), float(m))
                for c, k, m, f in zip(data[0], data[1], data[2], data[4])
                if f == 0 and int(c) in once
            }
    codes, counts, means, _ = Evidence.arrays(records)
    if model is None or not records:
        # Each mask's own mean; values of earlier fidelities shifted by the offsets that masks
        # measured under several of them show.
        offsets = evidence.paired_offsets(n) if records else {}
        if offsets:
            means = np.array([r.shifted_mean(offsets) for r in records])
        return Estimates(records, means, np.zeros(len(records)), model)
    if len(model.offsets) > 1:
        # On the reference fidelity's scale: each value less its fidelity's offset, whose
        # uncertainty adds to the estimate's in proportion to the values it shifts.
        fidelities = evidence.fidelities(n)[: len(model.offsets)]
        offsets = dict(zip(fidelities, model.offsets.tolist()))
        means = np.array([r.shifted_mean(offsets) for r in records])
        shares = np.array([r.shares(fidelities[1:]) for r in records])
        post_mean, post_sd = model.posterior(codes, counts, means, shares)
    else:
        post_mean, post_sd = model.posterior(codes, counts, means)
    return Estimates(records, post_mean, post_sd, model, fitted_rows)
