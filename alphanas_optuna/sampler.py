"""AlphaNASSampler: elitist evolution over layer masks, as an Optuna sampler.

The genotype is the layer mask that :func:`alphanas_optuna.suggest_mask` suggests as one categorical
parameter per encoder layer (``layer_00``, ``layer_01``, ...). The sampler decides a trial's whole
mask when the objective asks for the first of these parameters, writes it to the trial's system
attributes (so other workers see it at once) and answers every later bit from it. Any other parameter
goes to a fallback sampler.

All state that another process needs lives in the storage:

* ``AlphaNASSampler:proposal`` (trial system attribute): ``{"mask": "110111", "origin": ...,
  "parent": <trial number or None>, "generation": <g>}``, written once, when the objective asks for
  the first mask bit (one storage write per trial).
* ``AlphaNASSampler:generation`` (trial system attribute): the generation of a trial whose mask did
  not come from the sampler (enqueued or fixed parameters), written when it finishes.
* ``AlphaNASSampler:parent:<g>`` (study system attribute): the trial ids of generation ``g``'s elites,
  written once by the first worker that needs them (:class:`~optuna.samplers.BaseGASampler`'s cache).

The sampler keeps in memory only what it can rebuild from the storage (a digest of finished trials
with the running sums of the surrogate model, and the model last fitted to them, so that an ``ask``
does no Python work per finished trial), which is why a restarted process, or several processes on
one storage, continue the same generations.

This module imports only Optuna and NumPy.
"""

from __future__ import annotations

import itertools
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

from alphanas_optuna.mask import DEFAULT_PREFIX, format_mask, mask_from_params

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["AlphaNASSampler"]

_logger = optuna.logging.get_logger(__name__)

_EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED)
_PENDING = (TrialState.RUNNING, TrialState.WAITING)
# Up to this many layers, the nearest unevaluated mask is found by enumerating the whole space.
_MAX_ENUMERATE_LAYERS = 20
_MAX_REDRAWS = 64
# The surrogate is fitted once this many evaluated masks are feasible (COMPLETE).
_MIN_MODEL_DATA = 3
# The surrogate handles masks as int64 (longer masks use the plain algorithm).
_MAX_MODEL_LAYERS = 62
# Attempts at claiming a mask that no other pending trial holds.
_MAX_CLAIMS = 4


@dataclass
class _StudyDigest:
    """What the sampler has read from one study's finished trials (rebuildable from storage)."""

    finished_ids: set[int] = field(default_factory=set)
    # Masks (as ints, bit i = layer i) of COMPLETE and PRUNED trials: never proposed again.
    evaluated: set[int] = field(default_factory=set)
    # Trials before this index (in trial-number order) are all finished and folded in.
    scan_from: int = 0
    # Per mask length: running moments of the evaluated masks, for the surrogate.
    moments: dict[int, _MaskMoments] = field(default_factory=dict)
    n_evaluated: int = 0
    # Number of evaluated (COMPLETE or PRUNED) trials per generation.
    generation_counts: dict[int, int] = field(default_factory=dict)
    # COMPLETE trial ids per generation: the candidates to become elites.
    complete_by_generation: dict[int, list[int]] = field(default_factory=dict)
    n_layers: int | None = None
    trials_by_id: dict[int, FrozenTrial] = field(default_factory=dict)
    parent_ids: dict[int, list[int]] = field(default_factory=dict)
    # The surrogate last fitted to ``data`` and the key it was fitted for.
    model_key: tuple[Any, ...] | None = None
    model: _Surrogate | None = None


class _LazyBits(list):
    """The bits of a mask whose length is not known yet, drawn as the objective asks for them."""


@dataclass
class _Snapshot:
    digest: _StudyDigest
    pending: set[int]
    n_layers: int | None
    # Whether any trial other than the asking one is running or waiting.
    others_pending: bool = False


class AlphaNASSampler(BaseGASampler):
    """Elitist evolutionary search over layer masks (AlphaNAS), with all state in the storage.

    **Generation 0** proposes the full mask first (``include_full_mask``), then distinct masks in
    which every layer is kept with probability ``init_keep_prob`` (optionally tilted towards the
    bottom layers by ``init_bottom_bias``). The all-zero mask is never proposed. With
    ``surrogate=False`` these are plain random draws. With the surrogate on (single-objective
    studies), ``n_candidates`` masks are drawn from that distribution per proposal and one is
    chosen: until three masks are feasible, the one farthest in Hamming distance from every mask
    evaluated or pending other than the full mask (a space-filling design, origin ``"design"``);
    afterwards the one the surrogate scores best (origin ``"screened"``).

    **Generation g > 0** has as elites the ``n_elites`` best feasible (COMPLETE) trials of all earlier
    generations: the best of generation ``g - 1`` together with generation ``g - 1``'s elites, so an
    elite survives without being trained again. A single-objective study ranks by value; a
    two-objective study (e.g. maximize accuracy, minimize parameters) by non-dominated rank, ties
    broken by crowding distance. Each child copies one elite and flips bits.

    **Choice of parent (plain, ``surrogate=False``, and every multi-objective study).** The parent
    is an elite drawn uniformly at random; the child flips ``1 + Binomial(L - 1, (mutation_rate -
    1) / (L - 1))`` of its ``L`` bits (at least one, ``mutation_rate`` on average); the first such
    child not evaluated yet is proposed.

    **Choice of parent (``surrogate=True``, single-objective studies; the default).** The
    candidates are every unevaluated, non-pending mask within ``search_radius`` flips of some
    elite (at most ``n_candidates`` of them, drawn at random when there are more); the surrogate
    scores them all, the best is proposed, and its parent is the elite nearest to it (the better
    ranked on ties). The surrogate, refitted whenever a trial finishes, has two parts:

    * value: Bayesian ridge regression (prior precision 1) of the feasible masks' standardised
      objective value on the bits and the products of neighbouring bits (neighbouring layers
      interact most);
    * feasibility: a ridge (linear probability) model of "not pruned" on the bits and a one-hot of
      the number of kept layers, since pruning follows mostly from depth (too many parameters, or
      too few layers to reach the accuracy threshold); a pruned mask contributes no value.

    The score is constrained Thompson sampling: one draw of the value coefficients from their
    posterior per proposal, and the candidate maximising P(feasible) × max(draw − best value so
    far, 0) (if no candidate improves in the draw: P(feasible) × the drawn value). The posterior
    draw explores where data are thin, and differs between workers. Both models are refitted from
    running sums, so the cost of a proposal does not grow with the number of trials. The
    population, its generations and the elites stay those of the plain algorithm: the model only
    picks which child of the elites (or which initial mask) to evaluate next.

    **Pruned and failed trials.** A PRUNED trial (an infeasible mask) counts as evaluated: it fills
    its generation and its mask is never proposed again, but it is never an elite. A FAIL trial
    counts for nothing: its mask may be proposed again.

    **No duplicates.** A mask that was evaluated, or that another trial is evaluating (RUNNING) or
    will evaluate (WAITING with fixed parameters), is not proposed while an unevaluated mask is
    reachable: the sampler re-draws and, failing that, takes the unevaluated mask nearest to an
    elite. Only when every mask has been evaluated does it repeat one (with a warning, once).
    When another worker may be deciding at the same time (other trials pending, or trials numbered
    between this object's consecutive ones), the sampler re-reads the storage after writing its
    proposal and, if another trial took the same mask meanwhile, gives it up and chooses again
    (up to four tries); a duplicate then needs a race on that re-read too. A generation may
    overfill by up to the number of workers, as with NSGA-II.

    **Mask length.** The sampler learns the number of layers from finished trials, or from the
    proposals of pending ones (or from ``n_layers``); a running trial's parameters may be a part of
    its mask and do not count. The first trial of a study is the full mask, whose length does not matter; with
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
        surrogate: Choose initial masks and children with the surrogate model described above
            (single-objective studies only). ``False`` gives the plain seed algorithm.
        search_radius: With the surrogate, the candidate children are the masks within this many
            flips of an elite (at least 1; ``mutation_rate`` applies to the plain algorithm).
        n_candidates: Most masks the surrogate scores per proposal (at least 1).
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
        search_radius: int = 3,
        n_candidates: int = 2048,
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
        if not _is_int(search_radius) or search_radius < 1:
            raise ValueError(f"search_radius must be an integer >= 1, got {search_radius!r}")
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
        self._search_radius = int(search_radius)
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
        # Number of the last trial this object decided a mask for, per study (a hint only).
        self._last_numbers: dict[tuple[int, int], int] = {}
        self._storages: dict[tuple[int, int], Any] = {}

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
        final = mask_from_params(trial.params, self._prefix)
        if (decided == "full" or isinstance(decided, _LazyBits)) and final:
            # The mask's length was unknown when it was decided: record the mask as it came out.
            proposal = dict(trial.system_attrs.get(self.proposal_key(), {}))
            proposal["mask"] = format_mask(final)
            study._storage.set_trial_system_attr(trial._trial_id, self.proposal_key(), proposal)
        # A trial whose mask did not come from this sampler (enqueued, fixed parameters) still
        # belongs to a generation, so that it fills it and may become an elite.
        if (
            state in _EVALUATED
            and decided is None
            and self._generation_of(trial) is None
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
        generation = self._generation_of(trial)
        if generation is not None:
            return generation
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
        # The generation is stored with the proposal (one storage write per trial, not two).
        generation = self._generation_of(trial)
        if generation is None:
            generation = self._current_generation(snapshot.digest)
        rng = self._rng.rng
        taken = snapshot.digest.evaluated | snapshot.pending

        if n is None:
            # Nothing tells us the mask length yet: the full mask works for any length (unless
            # another pending trial has it); otherwise draw bits one at a time as the objective
            # asks for them.
            full_first = self._include_full_mask and not (
                snapshot.others_pending and self._full_claimed_elsewhere(study, trial)
            )
            decided: list[int] | str = "full" if full_first else _LazyBits()
            self._decided[trial._trial_id] = decided
            study._storage.set_trial_system_attr(
                trial._trial_id,
                self.proposal_key(),
                {
                    "mask": None,
                    "origin": "full" if decided == "full" else "random",
                    "parent": None,
                    "generation": generation,
                },
            )
            return decided

        full = (1 << n) - 1
        exhausted = len(taken) >= full and len({m for m in taken if 0 < m <= full}) >= full
        if exhausted and not self._warned_exhausted:
            self._warned_exhausted = True
            _logger.warning(
                f"Every one of the {full} masks of {n} layers has been evaluated or is being "
                "evaluated; AlphaNASSampler now repeats masks."
            )
        if exhausted:
            taken = set()

        # Another worker (process or thread) may be deciding masks at the same time when other
        # trials are pending, or when this object's previous trial in the study was not the one
        # just before. Only then is the claim below checked (it costs a storage read).
        study_key = self._study_key(study)
        previous = self._last_numbers.get(study_key)
        self._last_numbers[study_key] = trial.number
        shared = snapshot.others_pending or previous is None or trial.number != previous + 1
        for attempt in range(_MAX_CLAIMS):
            mask, origin, parent = self._choose(study, snapshot, generation, n, taken, rng)
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
                    "generation": generation,
                },
            )
            # Optimistic claim: check that no other trial (another worker's, say) took the same
            # mask since the snapshot; if one did, give it up and choose again.
            if exhausted or attempt == _MAX_CLAIMS - 1 or not shared:
                break
            if not self._claimed_elsewhere(study, trial, mask, snapshot.digest):
                break
            taken = taken | {mask}
        return bits

    def _choose(
        self,
        study: Study,
        snapshot: _Snapshot,
        generation: int,
        n: int,
        taken: set[int],
        rng: np.random.RandomState,
    ) -> tuple[int, str, FrozenTrial | None]:
        full = (1 << n) - 1
        mask: int | None = None
        parent: FrozenTrial | None = None
        origin = "random"
        if generation == 0 and self._include_full_mask and full not in taken:
            return full, "full", None
        if generation > 0:
            elites = self.get_parent_population(study, generation)
            elites = [e for e in elites if len(self._mask_of(e) or ()) == n]
            if elites:
                mask, parent = self._child(study, snapshot, elites, n, taken, rng)
                origin = "child"
        if mask is None and self._uses_model(study) and n <= _MAX_MODEL_LAYERS:
            mask, origin = self._initial(study, snapshot, n, taken, rng)
        if mask is None:
            mask = self._random_mask(n, taken, rng)
            origin = "random"
        return mask, origin, parent

    def _full_claimed_elsewhere(self, study: Study, trial: FrozenTrial) -> bool:
        """Whether another pending trial was given the full mask before its length was known."""
        others = study._storage.get_all_trials(study._study_id, deepcopy=False, states=_PENDING)
        for t in others:
            proposal = t.system_attrs.get(self.proposal_key(), None)
            if t._trial_id != trial._trial_id and isinstance(proposal, dict):
                if proposal.get("origin") == "full":
                    return True
        return False

    def _claimed_elsewhere(
        self, study: Study, trial: FrozenTrial, mask: int, digest: _StudyDigest
    ) -> bool:
        """Whether another trial not yet folded into the digest holds ``mask`` now (read fresh
        from the storage): it is running or waiting, or was evaluated since the snapshot."""
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        start = digest.scan_from if digest.scan_from <= len(trials) else 0
        for t in trials[start:]:
            if t._trial_id == trial._trial_id or t._trial_id in digest.finished_ids:
                continue
            if t.state not in _PENDING and t.state not in _EVALUATED:
                continue
            other = self._mask_of(t)
            if other is not None and _to_int(other) == mask:
                return True
        return False

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
        if self._uses_model(study) and n <= _MAX_MODEL_LAYERS:
            model = self._model(snapshot.digest, study.directions[0], n)
            if model is not None:
                candidates, parents = _neighbourhood(
                    elite_masks, n, self._search_radius, taken, self._n_candidates, rng
                )
                if len(candidates):
                    best = int(np.argmax(model.acquisition(candidates, rng)))
                    return int(candidates[best]), elites[int(parents[best])]
        candidate: int | None = None
        k = 0
        for _ in range(_MAX_REDRAWS):
            k = int(rng.randint(len(elites)))
            child = elite_masks[k] ^ self._flip_pattern(n, rng)
            if child != 0 and child not in taken:
                candidate = child
                break
        if candidate is None:
            k = int(rng.randint(len(elites)))
            candidate = self._nearest_free(elite_masks[k], n, taken, rng)
        return candidate, elites[k]

    def _uses_model(self, study: Study) -> bool:
        return self._surrogate and len(study.directions) == 1

    def _initial(
        self,
        study: Study,
        snapshot: _Snapshot,
        n: int,
        taken: set[int],
        rng: np.random.RandomState,
    ) -> tuple[int, str]:
        """A generation-0 mask with the surrogate on: a space-filling design, then screened draws.

        Candidates are ``n_candidates`` draws from the initial distribution (``init_keep_prob``,
        ``init_bottom_bias``). Until the model has enough data, the candidate farthest (in Hamming
        distance) from every evaluated or pending mask is taken; afterwards the one with the best
        acquisition score.
        """
        probs = self._keep_probs(n)
        draws = rng.random_sample((self._n_candidates, n)) < probs
        candidates = np.unique(draws.astype(np.int64) @ (1 << np.arange(n, dtype=np.int64)))
        candidates = candidates[candidates != 0]
        if taken:
            blocked = np.fromiter(taken, dtype=np.int64, count=len(taken))
            candidates = candidates[~np.isin(candidates, blocked)]
        if len(candidates) == 0:
            return self._random_mask(n, taken, rng), "random"
        candidates = rng.permutation(candidates)
        model = self._model(snapshot.digest, study.directions[0], n)
        if model is None:
            full = (1 << n) - 1
            others = [m for m in taken if 0 < m <= full and m != full]
            if not others:
                return int(candidates[0]), "design"
            others_arr = np.array(others, dtype=np.int64)
            distance = _popcount(candidates[:, None] ^ others_arr[None, :]).min(axis=1)
            return int(candidates[int(np.argmax(distance))]), "design"
        return int(candidates[int(np.argmax(model.acquisition(candidates, rng)))]), "screened"

    def _model(self, digest: _StudyDigest, direction: StudyDirection, n: int) -> _Surrogate | None:
        """The surrogate fitted to the digest's evaluated masks of length ``n`` (memoised per
        number of evaluated trials), or None while fewer than ``_MIN_MODEL_DATA`` are feasible."""
        key = (digest.n_evaluated, n, direction)
        if digest.model_key == key:
            return digest.model
        moments = digest.moments.get(n)
        sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
        model = None if moments is None else _Surrogate.fit(moments, sign)
        digest.model_key = key
        digest.model = model
        return model

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

    def _study_key(self, study: Study) -> tuple[int, int]:
        """Key of a study's caches. The storage is kept alive with the caches, so its ``id`` is
        never recycled for another storage while they exist."""
        key = (id(study._storage), study._study_id)
        self._storages.setdefault(key, study._storage)
        return key

    def _snapshot(self, study: Study, trial: FrozenTrial | None) -> _Snapshot:
        """Fold newly finished trials into the digest; collect the masks of pending trials."""
        with self._lock:
            key = self._study_key(study)
            digest = self._digests.setdefault(key, _StudyDigest())
            pending: set[int] = set()
            n_pending: int | None = None
            own_id = None if trial is None else trial._trial_id
            trials = study._get_trials(deepcopy=False, use_cache=True)
            start = digest.scan_from
            if start > len(trials) or (start and trials[start - 1].number != start - 1):
                start = 0  # Not the numbering the shortcut relies on: scan everything.
            prefix_done = True
            others_pending = False
            pending_full = False
            for index in range(start, len(trials)):
                t = trials[index]
                tid = t._trial_id
                if tid in digest.finished_ids:
                    if prefix_done:
                        digest.scan_from = index + 1
                    continue
                if tid == own_id:
                    prefix_done = False
                    continue
                state = t.state
                if state in _PENDING:
                    prefix_done = False
                    others_pending = True
                    mask = self._mask_of(t)
                    if mask is not None:
                        pending.add(_to_int(mask))
                        n_pending = max(n_pending or 0, len(mask))
                    else:
                        proposal = t.system_attrs.get(self.proposal_key(), None)
                        if isinstance(proposal, dict) and proposal.get("origin") == "full":
                            pending_full = True  # The full mask, length not known then.
                    continue
                digest.finished_ids.add(tid)
                if prefix_done and t.number == index:
                    digest.scan_from = index + 1
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
                digest.n_evaluated += 1
                if len(mask) <= _MAX_MODEL_LAYERS:
                    moments = digest.moments.get(len(mask))
                    if moments is None:
                        moments = digest.moments[len(mask)] = _MaskMoments(len(mask))
                    moments.add(m, None if values is None else values[0])
                generation = self._generation_of(t)
                if generation is not None:
                    digest.generation_counts[generation] = (
                        digest.generation_counts.get(generation, 0) + 1
                    )
                    if values is not None:
                        digest.complete_by_generation.setdefault(generation, []).append(tid)
            n_layers = self._n_layers or digest.n_layers or n_pending
            if pending_full and n_layers:
                pending.add((1 << n_layers) - 1)
            return _Snapshot(
                digest=digest, pending=pending, n_layers=n_layers, others_pending=others_pending
            )

    def _generation_of(self, trial: FrozenTrial) -> int | None:
        """A trial's generation: from its proposal, else from the generation attribute (trials
        whose mask did not come from this sampler, and studies of earlier versions)."""
        proposal = trial.system_attrs.get(self.proposal_key(), None)
        if isinstance(proposal, dict) and proposal.get("generation") is not None:
            return int(proposal["generation"])
        generation = trial.system_attrs.get(self._get_generation_key(), None)
        return None if generation is None else int(generation)

    def _mask_of(self, trial: FrozenTrial) -> tuple[int, ...] | None:
        """A trial's mask: its proposal, else its parameters, else its fixed (enqueued) ones."""
        proposal = trial.system_attrs.get(self.proposal_key(), None)
        if isinstance(proposal, dict) and isinstance(proposal.get("mask"), str):
            text = proposal["mask"]
            if text and trial.state in _PENDING:
                return tuple(int(c) for c in text)
        if trial.state in _PENDING:
            # A running trial's parameters may be a part of its mask: only a proposal or fixed
            # (enqueued) parameters say what it will evaluate.
            fixed = trial.system_attrs.get("fixed_params", None)
            return mask_from_params(fixed, self._prefix) if isinstance(fixed, dict) else None
        mask = mask_from_params(trial.params, self._prefix)
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


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class _Moments:
    """Running sums of a ridge regression's data: enough to refit it in O(d^3), whatever the
    number of rows."""

    def __init__(self, d: int) -> None:
        self.count = 0
        self.sx = np.zeros(d)
        self.sxx = np.zeros((d, d))
        self.sy = 0.0
        self.syy = 0.0
        self.sxy = np.zeros(d)
        self.y_max = -math.inf
        self.y_min = math.inf

    def add(self, x: np.ndarray, y: float) -> None:
        self.count += 1
        self.sx += x
        self.sxx += np.outer(x, x)
        self.sy += y
        self.syy += y * y
        self.sxy += x * y
        self.y_max = max(self.y_max, y)
        self.y_min = min(self.y_min, y)

    def ridge(
        self, sign: float = 1.0, prior: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]:
        """Bayesian ridge on centred features and standardised ``sign * y``, prior precision
        ``prior``: (feature means, posterior mean, posterior covariance, y mean, y scale, best
        standardised y)."""
        m = self.count
        x_mean = self.sx / m
        y_mean = sign * self.sy / m
        var = max(self.syy / m - y_mean * y_mean, 0.0)
        scale = math.sqrt(var) if var > 1e-24 else 1.0
        gram = self.sxx - m * np.outer(x_mean, x_mean) + prior * np.eye(len(x_mean))
        xty = (sign * self.sxy - m * x_mean * y_mean) / scale
        gram_inv = np.linalg.inv(gram)
        coef = gram_inv @ xty
        yty = (self.syy - m * y_mean * y_mean) / (scale * scale)
        centred = gram - prior * np.eye(len(x_mean))
        rss = max(yty - 2.0 * coef @ xty + coef @ centred @ coef, 0.0)
        noise = max(rss / max(m - 1, 1), 0.05)
        best = ((self.y_max if sign > 0 else -self.y_min) - y_mean) / scale
        return x_mean, coef, noise * gram_inv, y_mean, scale, best


class _MaskMoments:
    """The surrogate's data for masks of one length, folded in one trial at a time."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.value = _Moments(2 * n - 1 if n > 1 else n)
        self.feasible = _Moments(2 * n + 1)
        self.n_pruned = 0

    def add(self, mask: int, value: float | None) -> None:
        masks = np.array([mask], dtype=np.int64)
        self.feasible.add(_feasibility_features(masks, self.n)[0], 0.0 if value is None else 1.0)
        if value is None:
            self.n_pruned += 1
        elif math.isfinite(value):
            self.value.add(_features(masks, self.n)[0], value)


class _Surrogate:
    """A cheap model of the evaluated masks of one length: value and feasibility.

    * Value: Bayesian ridge regression (prior precision 1) of the feasible masks' standardised
      objective value (sign-adjusted so that higher is better) on the bits and the products of
      neighbouring bits.
    * Feasibility: ridge regression (a linear probability model) of "not pruned" on the bits and a
      one-hot of the number of kept layers, since pruning mostly follows from depth (too many
      parameters, or too few layers for the accuracy threshold); clipped to [0.01, 1].

    Both are refitted from running sums (:class:`_Moments`), so a refit costs the same with ten
    or ten thousand trials. ``acquisition`` is constrained Thompson sampling: one draw of the value
    coefficients from the posterior, scored as the probability of feasibility times the draw's
    improvement over the best feasible value so far (or, when no candidate improves in this draw,
    the feasibility-weighted value).
    """

    def __init__(self, moments: _MaskMoments, sign: float) -> None:
        self.n = moments.n
        self.x_mean, self.coef, cov, _, _, self.best = moments.value.ridge(sign)
        self.cov_chol = np.linalg.cholesky((cov + cov.T) / 2 + 1e-12 * np.eye(len(cov)))
        self.feasibility: tuple[np.ndarray, np.ndarray, float] | None = None
        if moments.n_pruned:
            f_mean, f_coef, _, f_y_mean, f_scale, _ = moments.feasible.ridge()
            self.feasibility = (f_mean, f_coef * f_scale, f_y_mean)

    @classmethod
    def fit(cls, moments: _MaskMoments, sign: float) -> _Surrogate | None:
        if moments.value.count < _MIN_MODEL_DATA:
            return None
        return cls(moments, sign)

    def p_feasible(self, candidates: np.ndarray) -> np.ndarray:
        if self.feasibility is None:
            return np.ones(len(candidates))
        f_mean, f_coef, f_y_mean = self.feasibility
        p = f_y_mean + (_feasibility_features(candidates, self.n) - f_mean) @ f_coef
        return np.clip(p, 0.01, 1.0)

    def acquisition(self, candidates: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        coef = self.coef + self.cov_chol @ rng.standard_normal(len(self.coef))
        value = (_features(candidates, self.n) - self.x_mean) @ coef
        p = self.p_feasible(candidates)
        improvement = p * np.maximum(value - self.best, 0.0)
        if improvement.max() > 0:
            return improvement
        return p * (value - value.min() + 1e-9)


def _feasibility_features(masks: np.ndarray, n: int) -> np.ndarray:
    bits = ((masks[:, None] >> np.arange(n)) & 1).astype(float)
    depth = bits.sum(axis=1).astype(int)
    onehot = np.zeros((len(masks), n + 1))
    onehot[np.arange(len(masks)), depth] = 1.0
    return np.concatenate([bits, onehot], axis=1)


_PATTERNS: dict[tuple[int, int], np.ndarray] = {}
# Above this many flip patterns per elite, the neighbourhood is sampled, not enumerated.
_MAX_PATTERNS = 8192


def _flip_patterns(n: int, radius: int) -> np.ndarray | None:
    """Every n-bit pattern with 1..radius bits set (None when there are too many)."""
    key = (n, radius)
    if key not in _PATTERNS:
        if sum(math.comb(n, r) for r in range(1, radius + 1)) > _MAX_PATTERNS:
            return None
        out = []
        for r in range(1, radius + 1):
            for combo in itertools.combinations(range(n), r):
                out.append(sum(1 << i for i in combo))
        _PATTERNS[key] = np.array(out, dtype=np.int64)
    return _PATTERNS[key]


def _neighbourhood(
    elite_masks: list[int],
    n: int,
    radius: int,
    taken: set[int],
    limit: int,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """Unevaluated non-zero masks within ``radius`` flips of an elite, and for each the index of
    the nearest elite (the better-ranked on ties); at most ``limit``, drawn at random."""
    elites = np.array(elite_masks, dtype=np.int64)
    patterns = _flip_patterns(n, radius)
    if patterns is None:
        k = rng.randint(len(elites), size=limit)
        flips = rng.randint(1, radius + 1, size=limit)
        patterns_drawn = np.array(
            [sum(1 << int(i) for i in rng.choice(n, size=f, replace=False)) for f in flips],
            dtype=np.int64,
        )
        candidates = np.unique(elites[k] ^ patterns_drawn)
    else:
        candidates = np.unique((elites[:, None] ^ patterns[None, :]).ravel())
    candidates = candidates[candidates != 0]
    if taken:
        blocked = np.fromiter(taken, dtype=np.int64, count=len(taken))
        candidates = candidates[~np.isin(candidates, blocked)]
    if len(candidates) > limit:
        candidates = rng.choice(candidates, size=limit, replace=False)
    distance = _popcount(candidates[:, None] ^ elites[None, :])
    return candidates, np.argmin(distance, axis=1)
