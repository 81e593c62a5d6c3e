"""AlphaNASSampler: elitist evolution over layer masks, as an Optuna sampler.

The genotype is the layer mask that :func:`alphanas_optuna.suggest_mask` suggests as one categorical
parameter per encoder layer (``layer_00``, ``layer_01``, ...). The sampler decides a trial's whole
mask when the objective asks for the first of these parameters, writes it to the trial's system
attributes (so other workers see it at once) and answers every later bit from it. Any other parameter
goes to a fallback sampler.

All state that another process needs lives in the storage:

* ``AlphaNASSampler:generation`` (trial system attribute): the trial's generation.
* ``AlphaNASSampler:proposal`` (trial system attribute): ``{"mask": "110111", "origin": ...,
  "parent": <trial number or None>}``.
* ``AlphaNASSampler:parent:<g>`` (study system attribute): the trial ids of generation ``g``'s elites,
  written once by the first worker that needs them (:class:`~optuna.samplers.BaseGASampler`'s cache).

The sampler keeps in memory only what it can rebuild from the storage (a digest of finished trials,
so that an ``ask`` does not redo Python work for every finished trial), which is why a restarted
process, or several processes on one storage, continue the same generations.

This module imports only Optuna and NumPy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseGASampler, BaseSampler, RandomSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from alphanas_optuna.mask import DEFAULT_PREFIX, format_mask, param_name

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["AlphaNASSampler"]

_logger = optuna.logging.get_logger(__name__)

_EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED)
_PENDING = (TrialState.RUNNING, TrialState.WAITING)
# Up to this many layers, the nearest unevaluated mask is found by enumerating the whole space.
_MAX_ENUMERATE_LAYERS = 20
_MAX_REDRAWS = 64
# Expected flipped bits of the candidates that the surrogate screens (wider than plain children: the
# model, not the population, keeps the search local).
_CANDIDATE_MUTATION_RATE = 3.0


@dataclass
class _StudyDigest:
    """What the sampler has read from one study's finished trials (rebuildable from storage)."""

    finished_ids: set[int] = field(default_factory=set)
    # Masks (as ints, bit i = layer i) of COMPLETE and PRUNED trials: never proposed again.
    evaluated: set[int] = field(default_factory=set)
    # Evaluated trials in order: (trial id, mask int, mask length, values or None when pruned).
    data: list[tuple[int, int, int, tuple[float, ...] | None]] = field(default_factory=list)
    # Number of evaluated (COMPLETE or PRUNED) trials per generation.
    generation_counts: dict[int, int] = field(default_factory=dict)
    # COMPLETE trial ids per generation: the candidates to become elites.
    complete_by_generation: dict[int, list[int]] = field(default_factory=dict)
    n_layers: int | None = None
    trials_by_id: dict[int, FrozenTrial] = field(default_factory=dict)
    parent_ids: dict[int, list[int]] = field(default_factory=dict)


class _LazyBits(list):
    """The bits of a mask whose length is not known yet, drawn as the objective asks for them."""


@dataclass
class _Snapshot:
    digest: _StudyDigest
    pending: set[int]
    n_layers: int | None


class AlphaNASSampler(BaseGASampler):
    """Elitist evolutionary search over layer masks (AlphaNAS), with all state in the storage.

    **Generation 0** proposes the full mask first (``include_full_mask``), then distinct random masks
    in which every layer is kept with probability ``init_keep_prob`` (optionally tilted towards the
    bottom layers by ``init_bottom_bias``). The all-zero mask is never proposed.

    **Generation g > 0** has as elites the ``n_elites`` best feasible (COMPLETE) trials of all earlier
    generations: the best of generation ``g - 1`` together with generation ``g - 1``'s elites, so an
    elite survives without being trained again. A single-objective study ranks by value; a
    two-objective study (e.g. maximize accuracy, minimize parameters) by non-dominated rank, ties
    broken by crowding distance. Each child copies one elite and flips bits: ``1 + Binomial(L - 1,
    (mutation_rate - 1) / (L - 1))`` of its ``L`` bits, so every child flips at least one bit and
    on average ``mutation_rate``.

    **Choice of parent.** With ``surrogate=False`` (the plain algorithm) the parent is an elite drawn
    uniformly at random and the first mutant not yet evaluated is proposed. With ``surrogate=True``
    (single-objective studies) the sampler draws ``n_candidates`` distinct unevaluated mutants, each
    from an elite drawn uniformly at random, fits a ridge regression of the objective value on the
    evaluated masks (features: the bits and the products of neighbouring bits; pruned masks get a
    value below the worst feasible one) and proposes the mutant with the best prediction. The
    model only screens mutants of the elites; the population and elites stay those of the plain
    algorithm.

    **Pruned and failed trials.** A PRUNED trial (an infeasible mask) counts as evaluated: it fills
    its generation and its mask is never proposed again, but it is never an elite. A FAIL trial
    counts for nothing: its mask may be proposed again.

    **No duplicates.** A mask that was evaluated, or that another trial is evaluating (RUNNING) or
    will evaluate (WAITING with fixed parameters), is not proposed while an unevaluated mask is
    reachable: the sampler re-draws and, failing that, takes the unevaluated mask nearest to an
    elite. Only when every mask has been evaluated does it repeat one (with a warning, once).
    Several workers may still propose the same mask if they decide it at the same instant, and a
    generation may overfill by up to the number of workers, as with NSGA-II.

    **Mask length.** The sampler learns the number of layers from earlier trials (or from
    ``n_layers``). The first trial of a study is the full mask, whose length does not matter; with
    ``include_full_mask=False`` and no ``n_layers`` its bits are drawn one at a time, keeping layer 0.

    Args:
        population_size: Trials per generation (at least 2).
        n_elites: Elites that parent the next generation; default ``population_size // 2``.
        mutation_rate: Expected number of flipped bits per child, at least 1.
        init_keep_prob: Chance that a random initial mask keeps a layer, in (0, 1].
        init_bottom_bias: Tilt of the initial keep probabilities towards the bottom layers, in
            [0, 1]: layer ``i`` of ``L`` is kept with probability ``init_keep_prob +
            init_bottom_bias * (0.5 - i / (L - 1))``, clipped to [0.02, 0.98]. 0 (default) is the
            plain uniform initialisation.
        include_full_mask: Propose the full mask (all layers kept) first.
        surrogate: Screen candidate children with a ridge-regression model of the evaluated masks
            (single-objective studies only). ``False`` gives the plain seed algorithm.
        n_candidates: Children screened per proposal when ``surrogate`` is on (at least 1).
        prefix: Parameter-name prefix of the mask bits (as given to ``suggest_mask``).
        n_layers: Number of encoder layers, if known; by default learnt from the trials.
        seed: Seed for the sampler's random numbers (and the default fallback sampler).
        fallback_sampler: Sampler for every parameter that is not a mask bit; default
            ``RandomSampler(seed=seed)``.

    Raises:
        ValueError: An argument is out of range; the message names it.
    """

    def __init__(
        self,
        *,
        population_size: int = 10,
        n_elites: int | None = None,
        mutation_rate: float = 1.0,
        init_keep_prob: float = 0.5,
        init_bottom_bias: float = 0.0,
        include_full_mask: bool = True,
        surrogate: bool = True,
        n_candidates: int = 64,
        prefix: str = DEFAULT_PREFIX,
        n_layers: int | None = None,
        seed: int | None = None,
        fallback_sampler: BaseSampler | None = None,
    ) -> None:
        if not _is_int(population_size) or population_size < 2:
            raise ValueError(f"population_size must be an integer >= 2, got {population_size!r}")
        if n_elites is None:
            n_elites = max(1, population_size // 2)
        if not _is_int(n_elites) or not 1 <= n_elites <= population_size:
            raise ValueError(
                f"n_elites must be an integer in [1, population_size={population_size}], "
                f"got {n_elites!r}"
            )
        if not _is_real(mutation_rate) or not mutation_rate >= 1.0 or math.isinf(mutation_rate):
            raise ValueError(
                "mutation_rate (expected flipped bits per child; every child flips at least one) "
                f"must be a finite number >= 1, got {mutation_rate!r}"
            )
        if not _is_real(init_keep_prob) or not 0.0 < init_keep_prob <= 1.0:
            raise ValueError(f"init_keep_prob must be in (0, 1], got {init_keep_prob!r}")
        if not _is_real(init_bottom_bias) or not 0.0 <= init_bottom_bias <= 1.0:
            raise ValueError(f"init_bottom_bias must be in [0, 1], got {init_bottom_bias!r}")
        if not isinstance(include_full_mask, bool):
            raise ValueError(f"include_full_mask must be a bool, got {include_full_mask!r}")
        if not isinstance(surrogate, bool):
            raise ValueError(f"surrogate must be a bool, got {surrogate!r}")
        if not _is_int(n_candidates) or n_candidates < 1:
            raise ValueError(f"n_candidates must be an integer >= 1, got {n_candidates!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        if n_layers is not None and (not _is_int(n_layers) or n_layers < 1):
            raise ValueError(f"n_layers must be a positive integer or None, got {n_layers!r}")
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        if fallback_sampler is not None and not isinstance(fallback_sampler, BaseSampler):
            raise ValueError(
                f"fallback_sampler must be an optuna sampler or None, got {fallback_sampler!r}"
            )

        super().__init__(population_size=int(population_size))
        self._n_elites = int(n_elites)
        self._mutation_rate = float(mutation_rate)
        self._init_keep_prob = float(init_keep_prob)
        self._init_bottom_bias = float(init_bottom_bias)
        self._include_full_mask = include_full_mask
        self._surrogate = surrogate
        self._n_candidates = int(n_candidates)
        self._candidate_rate = _CANDIDATE_MUTATION_RATE
        self._prefix = prefix
        self._n_layers = None if n_layers is None else int(n_layers)
        self._rng = LazyRandomState(seed)
        self._fallback = fallback_sampler or RandomSampler(seed=seed)
        self._lock = threading.RLock()
        # In-process memos, all rebuildable from the storage.
        self._digests: dict[tuple[int, int], _StudyDigest] = {}
        # Masks decided for trials this process is running: trial id -> bits (or a lazy list).
        self._decided: dict[int, list[int] | str] = {}
        self._warned_exhausted = False

    # ----------------------------------------------------------------------------------------------
    # Public helpers

    @classmethod
    def proposal_key(cls) -> str:
        """The trial system attribute that holds a proposal: mask, origin and parent number."""
        return f"{cls.__name__}:proposal"

    @property
    def n_elites(self) -> int:
        """Number of elites per generation."""
        return self._n_elites

    @property
    def prefix(self) -> str:
        """Parameter-name prefix of the mask bits."""
        return self._prefix

    # ----------------------------------------------------------------------------------------------
    # BaseSampler interface

    def reseed_rng(self) -> None:
        self._rng.rng.seed()
        self._fallback.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self._fallback.infer_relative_search_space(study, trial)
        return {k: v for k, v in space.items() if self._layer_index(k, v) is None}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        return self._fallback.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        index = self._layer_index(param_name, param_distribution)
        if index is None:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        with self._lock:
            decided = self._decided.get(trial._trial_id)
            if decided is None:
                decided = self._stored_proposal(study, trial)
            if decided is None:
                decided = self._decide(study, trial)
            return self._bit(trial._trial_id, decided, index)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._fallback.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            decided = self._decided.pop(trial._trial_id, None)
        if (decided == "full" or isinstance(decided, _LazyBits)) and self._mask_of(trial):
            # The mask's length was unknown when it was decided: record the mask as it came out.
            proposal = dict(trial.system_attrs.get(self.proposal_key(), {}))
            proposal["mask"] = format_mask(self._mask_of(trial) or ())
            study._storage.set_trial_system_attr(trial._trial_id, self.proposal_key(), proposal)
        # A trial whose mask did not come from this sampler (enqueued, fixed parameters) still
        # belongs to a generation, so that it fills it and may become an elite.
        if (
            state in _EVALUATED
            and decided is None
            and self._get_generation_key() not in trial.system_attrs
            and self._mask_of(trial) is not None
        ):
            self.get_trial_generation(study, trial)
        self._fallback.after_trial(study, trial, state, values)

    # ----------------------------------------------------------------------------------------------
    # BaseGASampler interface

    def get_trial_generation(self, study: Study, trial: FrozenTrial) -> int:
        """The trial's generation; a new trial joins the newest one until it holds
        ``population_size`` evaluated trials. Unlike the base class, PRUNED trials count as
        evaluated (an infeasible mask fills its generation); FAIL trials do not."""
        generation = trial.system_attrs.get(self._get_generation_key(), None)
        if generation is not None:
            return int(generation)
        snapshot = self._snapshot(study, trial)
        generation = self._current_generation(snapshot.digest)
        study._storage.set_trial_system_attr(
            trial._trial_id, self._get_generation_key(), generation
        )
        return generation

    def get_population(self, study: Study, generation: int) -> list[FrozenTrial]:
        """The COMPLETE (feasible) trials of ``generation``: the candidates to become elites."""
        digest = self._snapshot(study, None).digest
        return [
            digest.trials_by_id[tid] for tid in digest.complete_by_generation.get(generation, [])
        ]

    def get_parent_population(self, study: Study, generation: int) -> list[FrozenTrial]:
        """The elites of ``generation``, cached in the study's system attributes.

        The first worker that needs a generation's elites computes and stores them; every other
        worker, and every later process, reads the same list. Missing generations are filled in
        from the newest cached one upwards, without recursion.
        """
        if generation == 0:
            return []
        digest = self._snapshot(study, None).digest
        ids = digest.parent_ids.get(generation)
        if ids is None:
            prefix = self._get_parent_cache_key_prefix()
            attrs = study._storage.get_study_system_attrs(study._study_id)
            cached: dict[int, list[int]] = {}
            for key, value in attrs.items():
                if key.startswith(prefix) and key[len(prefix) :].isdigit():
                    cached[int(key[len(prefix) :])] = list(value)
            ids = cached.get(generation)
            if ids is None:
                start = max((g for g in cached if g < generation), default=0)
                parents = cached.get(start, [])
                for g in range(start + 1, generation + 1):
                    pool = dict.fromkeys(digest.complete_by_generation.get(g - 1, []))
                    pool.update(dict.fromkeys(parents))
                    trials = [digest.trials_by_id[t] for t in pool if t in digest.trials_by_id]
                    parents = [
                        t._trial_id
                        for t in _select_elites(trials, study.directions, self._n_elites)
                    ]
                    if g not in cached:
                        study._storage.set_study_system_attr(
                            study._study_id, prefix + str(g), parents
                        )
                    digest.parent_ids[g] = parents
                ids = parents
            digest.parent_ids[generation] = list(ids)
        return [digest.trials_by_id[tid] for tid in ids if tid in digest.trials_by_id]

    def select_parent(self, study: Study, generation: int) -> list[FrozenTrial]:
        """The ``n_elites`` best feasible trials among generation ``generation - 1`` and its
        elites (hence the best of all earlier generations)."""
        candidates = {
            t._trial_id: t
            for t in self.get_population(study, generation - 1)
            + self.get_parent_population(study, generation - 1)
        }
        return _select_elites(list(candidates.values()), study.directions, self._n_elites)

    # ----------------------------------------------------------------------------------------------
    # Deciding a mask

    def _decide(self, study: Study, trial: FrozenTrial) -> list[int] | str:
        snapshot = self._snapshot(study, trial)
        n = snapshot.n_layers
        generation = trial.system_attrs.get(self._get_generation_key(), None)
        if generation is None:
            generation = self._current_generation(snapshot.digest)
            study._storage.set_trial_system_attr(
                trial._trial_id, self._get_generation_key(), generation
            )
        rng = self._rng.rng
        taken = snapshot.digest.evaluated | snapshot.pending
        parent: FrozenTrial | None = None
        mask: int | None = None
        origin = "random"

        if n is None:
            # Nothing tells us the mask length yet: the full mask works for any length; otherwise
            # draw bits one at a time as the objective asks for them.
            decided: list[int] | str = "full" if self._include_full_mask else _LazyBits()
            self._decided[trial._trial_id] = decided
            study._storage.set_trial_system_attr(
                trial._trial_id,
                self.proposal_key(),
                {"mask": None, "origin": "full" if decided == "full" else "random", "parent": None},
            )
            return decided

        full = (1 << n) - 1
        exhausted = len({m for m in taken if 0 < m <= full}) >= full
        if exhausted and not self._warned_exhausted:
            self._warned_exhausted = True
            _logger.warning(
                f"Every one of the {full} masks of {n} layers has been evaluated or is being "
                "evaluated; AlphaNASSampler now repeats masks."
            )
        if exhausted:
            taken = set()

        if generation == 0 and self._include_full_mask and full not in taken:
            mask, origin = full, "full"
        elif generation > 0:
            elites = self.get_parent_population(study, generation)
            elites = [e for e in elites if self._mask_of(e) is not None]
            elites = [e for e in elites if len(self._mask_of(e) or ()) == n]
            if elites:
                mask, parent = self._child(study, snapshot, elites, n, taken, rng)
                origin = "child"
        if mask is None:
            mask = self._random_mask(n, taken, rng)
            origin = "random"
        if exhausted:
            origin += " (repeat)"

        bits = [(mask >> i) & 1 for i in range(n)]
        self._decided[trial._trial_id] = bits
        study._storage.set_trial_system_attr(
            trial._trial_id,
            self.proposal_key(),
            {
                "mask": format_mask(bits),
                "origin": origin,
                "parent": None if parent is None else parent.number,
            },
        )
        return bits

    def _child(
        self,
        study: Study,
        snapshot: _Snapshot,
        elites: list[FrozenTrial],
        n: int,
        taken: set[int],
        rng: np.random.RandomState,
    ) -> tuple[int, FrozenTrial]:
        elite_masks = [_to_int(self._mask_of(e) or ()) for e in elites]
        use_model = self._surrogate and len(study.directions) == 1
        want = self._n_candidates if use_model else 1
        candidates: list[tuple[int, int]] = []  # (mask, elite index)
        seen: set[int] = set()
        attempts = _MAX_REDRAWS if want == 1 else 4 * want
        for _ in range(attempts):
            k = int(rng.randint(len(elites)))
            rate = max(self._mutation_rate, self._candidate_rate) if use_model else None
            child = elite_masks[k] ^ self._flip_pattern(n, rng, rate)
            if child == 0 or child in taken or child in seen:
                continue
            seen.add(child)
            candidates.append((child, k))
            if len(candidates) >= want:
                break
        if not candidates:
            k = int(rng.randint(len(elites)))
            return self._nearest_free(elite_masks[k], n, taken, rng), elites[k]
        if len(candidates) == 1 or not use_model:
            child, k = candidates[0]
            return child, elites[k]
        scores = self._predict(
            snapshot.digest, study.directions[0], n, [c for c, _ in candidates], rng
        )
        if scores is None:
            child, k = candidates[0]
        else:
            child, k = candidates[int(np.argmax(scores))]
        return child, elites[k]

    def _flip_pattern(self, n: int, rng: np.random.RandomState, rate: float | None = None) -> int:
        rate = self._mutation_rate if rate is None else rate
        extra = 0
        if n > 1 and rate > 1.0:
            extra = int(rng.binomial(n - 1, min(1.0, (rate - 1.0) / (n - 1))))
        if extra == 0:
            return 1 << int(rng.randint(n))
        positions = rng.choice(n, size=1 + extra, replace=False)
        pattern = 0
        for p in positions:
            pattern |= 1 << int(p)
        return pattern

    def _keep_probs(self, n: int) -> np.ndarray:
        if n == 1:
            return np.array([1.0])
        tilt = self._init_bottom_bias * (0.5 - np.arange(n) / (n - 1))
        return np.clip(self._init_keep_prob + tilt, 0.02, 0.98)

    def _random_mask(self, n: int, taken: set[int], rng: np.random.RandomState) -> int:
        probs = self._keep_probs(n)
        mask = 0
        for _ in range(_MAX_REDRAWS):
            bits = rng.random_sample(n) < probs
            mask = _to_int(bits.tolist())
            if mask != 0 and mask not in taken:
                return mask
        return self._nearest_free(mask or 1, n, taken, rng)

    def _nearest_free(self, mask: int, n: int, taken: set[int], rng: np.random.RandomState) -> int:
        """An unevaluated non-zero mask nearest (in Hamming distance) to ``mask``; random ties."""
        full = (1 << n) - 1
        if n <= _MAX_ENUMERATE_LAYERS:
            space = np.arange(1, full + 1, dtype=np.int64)
            if taken:
                blocked = np.fromiter((m for m in taken if 0 < m <= full), dtype=np.int64)
                space = space[~np.isin(space, blocked)]
            if len(space) == 0:
                return mask if 0 < mask <= full else full
            distance = _popcount(space ^ mask)
            best = space[distance == distance.min()]
            return int(best[rng.randint(len(best))])
        for _ in range(100 * _MAX_REDRAWS):
            candidate = int.from_bytes(rng.bytes((n + 7) // 8), "little") & full
            if candidate and candidate not in taken:
                return candidate
        return mask if 0 < mask <= full else full

    def _predict(
        self,
        digest: _StudyDigest,
        direction: StudyDirection,
        n: int,
        candidates: list[int],
        rng: np.random.RandomState,
    ) -> np.ndarray | None:
        """Ridge-regression scores (higher is better) of candidate masks, or None if too few data."""
        rows = [(m, v) for _, m, length, v in digest.data if length == n]
        values = np.array([v[0] for _, v in rows if v is not None], dtype=float)
        values = values[np.isfinite(values)]
        if len(values) < 3:
            return None
        sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
        ys = []
        masks = []
        spread = float(values.max() - values.min()) or 1.0
        worst = float((sign * values).min())
        for m, v in rows:
            if v is None:
                y = worst - 0.5 * spread
            elif not math.isfinite(v[0]):
                continue
            else:
                y = sign * v[0]
            masks.append(m)
            ys.append(y)
        x = _features(np.array(masks, dtype=np.int64), n)
        y = np.array(ys)
        mean = y.mean()
        scale = y.std() or 1.0
        y = (y - mean) / scale
        x_mean = x.mean(axis=0)
        xc = x - x_mean
        gram = xc.T @ xc + 1.0 * np.eye(x.shape[1])
        coef = np.linalg.solve(gram, xc.T @ y)
        # Thompson sampling from the Bayesian ridge posterior: explores where data are thin.
        resid = y - xc @ coef
        noise = max(float(resid @ resid) / max(len(y) - 1, 1), 0.05)
        cov = noise * np.linalg.inv(gram)
        coef = rng.multivariate_normal(coef, (cov + cov.T) / 2)
        return (_features(np.array(candidates, dtype=np.int64), n) - x_mean) @ coef

    # ----------------------------------------------------------------------------------------------
    # Reading the storage

    def _current_generation(self, digest: _StudyDigest) -> int:
        if not digest.generation_counts:
            return 0
        newest = max(digest.generation_counts)
        assert self._population_size is not None
        if digest.generation_counts[newest] < self._population_size:
            return newest
        return newest + 1

    def _snapshot(self, study: Study, trial: FrozenTrial | None) -> _Snapshot:
        """Fold newly finished trials into the digest; collect the masks of pending trials."""
        with self._lock:
            key = (id(study._storage), study._study_id)
            digest = self._digests.setdefault(key, _StudyDigest())
            pending: set[int] = set()
            n_pending: int | None = None
            gen_key = self._get_generation_key()
            own_id = None if trial is None else trial._trial_id
            for t in study._get_trials(deepcopy=False, use_cache=True):
                tid = t._trial_id
                if tid in digest.finished_ids or tid == own_id:
                    continue
                state = t.state
                if state in _PENDING:
                    mask = self._mask_of(t)
                    if mask is not None:
                        pending.add(_to_int(mask))
                        n_pending = max(n_pending or 0, len(mask))
                    continue
                digest.finished_ids.add(tid)
                if state not in _EVALUATED:
                    continue  # FAIL: counts for nothing.
                mask = self._mask_of(t)
                if mask is None:
                    continue
                m = _to_int(mask)
                digest.evaluated.add(m)
                digest.n_layers = len(mask)
                digest.trials_by_id[tid] = t
                values = tuple(t.values) if state == TrialState.COMPLETE else None
                digest.data.append((tid, m, len(mask), values))
                generation = t.system_attrs.get(gen_key, None)
                if generation is not None:
                    generation = int(generation)
                    digest.generation_counts[generation] = (
                        digest.generation_counts.get(generation, 0) + 1
                    )
                    if values is not None:
                        digest.complete_by_generation.setdefault(generation, []).append(tid)
            n_layers = self._n_layers or digest.n_layers or n_pending
            return _Snapshot(digest=digest, pending=pending, n_layers=n_layers)

    def _mask_of(self, trial: FrozenTrial) -> tuple[int, ...] | None:
        """A trial's mask: its proposal, else its parameters, else its fixed (enqueued) ones."""
        proposal = trial.system_attrs.get(self.proposal_key(), None)
        if isinstance(proposal, dict) and isinstance(proposal.get("mask"), str):
            text = proposal["mask"]
            if text and trial.state in _PENDING:
                return tuple(int(c) for c in text)
        mask = _mask_from(trial.params, self._prefix)
        if mask is None and trial.state == TrialState.WAITING:
            fixed = trial.system_attrs.get("fixed_params", None)
            if isinstance(fixed, dict):
                mask = _mask_from(fixed, self._prefix)
        if mask is None and isinstance(proposal, dict) and isinstance(proposal.get("mask"), str):
            text = proposal["mask"]
            mask = tuple(int(c) for c in text) if text else None
        return mask

    def _stored_proposal(self, study: Study, trial: FrozenTrial) -> list[int] | None:
        """The mask decided for this trial by an earlier sampler object, if any (rare)."""
        proposal = trial.system_attrs.get(self.proposal_key(), None)
        if not isinstance(proposal, dict):
            return None
        text = proposal.get("mask")
        if isinstance(text, str) and text:
            bits = [int(c) for c in text]
            self._decided[trial._trial_id] = bits
            return bits
        return None

    def _bit(self, trial_id: int, decided: list[int] | str, index: int) -> int:
        if decided == "full":
            return 1
        assert isinstance(decided, list)
        if isinstance(decided, _LazyBits):
            # Mask length unknown: draw each bit when the objective asks for it, keeping layer 0.
            rng = self._rng.rng
            while len(decided) <= index:
                i = len(decided)
                keep = rng.random_sample() < self._init_keep_prob
                decided.append(1 if i == 0 else int(keep))
        if index < len(decided):
            return int(decided[index])
        return 1  # A layer beyond the mask length learnt from earlier trials is kept.

    def _layer_index(self, name: str, distribution: BaseDistribution) -> int | None:
        if not name.startswith(self._prefix):
            return None
        rest = name[len(self._prefix) :]
        if not rest.isdigit():
            return None
        if not isinstance(distribution, CategoricalDistribution):
            return None
        if set(distribution.choices) != {0, 1} or len(distribution.choices) != 2:
            return None
        return int(rest)


# --------------------------------------------------------------------------------------------------
# Helpers


def _select_elites(
    trials: list[FrozenTrial], directions: Sequence[StudyDirection], n: int
) -> list[FrozenTrial]:
    """The ``n`` best trials: by value, or by non-dominated rank and crowding distance."""
    trials = [t for t in trials if t.values is not None and all(map(math.isfinite, t.values))]
    trials.sort(key=lambda t: t.number)
    if len(trials) <= n:
        return trials
    signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    loss = np.array([t.values for t in trials], dtype=float) * signs
    if len(directions) == 1:
        order = np.argsort(loss[:, 0], kind="stable")
        return [trials[i] for i in order[:n]]
    ranks = _non_domination_rank(loss)
    chosen: list[FrozenTrial] = []
    for r in range(int(ranks.max()) + 1):
        front = [i for i in range(len(trials)) if ranks[i] == r]
        if len(chosen) + len(front) <= n:
            chosen.extend(trials[i] for i in front)
            if len(chosen) == n:
                break
            continue
        distance = _crowding_distance(loss[front])
        order = sorted(range(len(front)), key=lambda j: (-distance[j], trials[front[j]].number))
        chosen.extend(trials[front[j]] for j in order[: n - len(chosen)])
        break
    return chosen


def _non_domination_rank(loss: np.ndarray) -> np.ndarray:
    try:
        from optuna.study._multi_objective import _fast_non_domination_rank
    except ImportError:  # pragma: no cover - private API moved
        _fast_non_domination_rank = None
    if _fast_non_domination_rank is not None:
        return np.asarray(_fast_non_domination_rank(loss), dtype=int)
    ranks = np.full(len(loss), -1, dtype=int)  # pragma: no cover
    rank = 0  # pragma: no cover
    while (ranks < 0).any():  # pragma: no cover
        left = np.flatnonzero(ranks < 0)
        for i in left:
            others = loss[left]
            dominated = np.any(np.all(others <= loss[i], axis=1) & np.any(others < loss[i], axis=1))
            if not dominated:
                ranks[i] = rank
        rank += 1
    return ranks  # pragma: no cover


def _crowding_distance(loss: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance (boundary points infinite, others summed normalised gaps)."""
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


def _features(masks: np.ndarray, n: int) -> np.ndarray:
    bits = ((masks[:, None] >> np.arange(n)) & 1).astype(float)
    if n < 2:
        return bits
    return np.concatenate([bits, bits[:, :-1] * bits[:, 1:]], axis=1)


def _popcount(values: np.ndarray) -> np.ndarray:
    count = np.zeros(values.shape, dtype=np.int64)
    v = values.copy()
    while np.any(v):
        count += v & 1
        v >>= 1
    return count


def _to_int(mask: Sequence[int]) -> int:
    value = 0
    for i, b in enumerate(mask):
        if b:
            value |= 1 << i
    return value


def _mask_from(params: Any, prefix: str) -> tuple[int, ...] | None:
    indices = []
    for name in params:
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            indices.append(int(name[len(prefix) :]))
    if not indices:
        return None
    n = max(indices) + 1
    if len(indices) != n:
        return None
    try:
        bits = tuple(int(params[param_name(i, prefix)]) for i in range(n))
    except (KeyError, TypeError, ValueError):
        return None
    if any(b not in (0, 1) for b in bits):
        return None
    return bits


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
