"""AlphaNASSampler: the Optuna-facing class. It reads the storage (:mod:`.digest`), asks the
model (:mod:`.model`, :mod:`.evidence`) and the proposal functions (:mod:`.proposals`) for a mask,
and writes its decision back; the elites come from the one rule in :mod:`.elites`."""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseGASampler, BaseSampler, RandomSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from alphanas_optuna.mask import (
    DEFAULT_PREFIX,
    format_mask,
    is_integer,
    mask_from_code,
    mask_from_params,
    mask_to_code,
)
from alphanas_optuna.sampler import proposals
from alphanas_optuna.sampler.digest import (
    EVALUATED,
    Snapshot,
    StudyDigest,
    claimed_elsewhere,
    generation_of,
    mask_of,
    origin_of,
    take_snapshot,
)
from alphanas_optuna.sampler.elites import select_elites
from alphanas_optuna.sampler.evidence import Estimates
from alphanas_optuna.sampler.model import refit_due

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["AlphaNASSampler", "evaluation_index"]

_logger = optuna.logging.get_logger(__name__)

PROPOSAL_KEY = "AlphaNASSampler:proposal"
# The surrogate handles masks as int64 (longer masks use the plain algorithm).
_MAX_MODEL_LAYERS = 62
# Attempts at claiming a mask that no other pending trial holds.
_MAX_CLAIMS = 4
# Re-evaluations start with this generation: the first ones explore.
REEVALUATE_FROM_GENERATION = 1
# A mask is a contender for the best when its estimate is within this many standard errors.
CONTENDER_Z = 2.0
MAX_CONTENDERS = 5
# The leader is measured again while it has fewer evaluations than this (and noise is not 0).
CONFIRM_BELOW = 2
# Two-objective studies confirm this many points of their front, no more: enough repeats to set
# the noise scale (and to tell a deterministic objective, as DETERMINISTIC_REPEATS does), without
# which the value model takes its prior's noise and, on landscapes where most masks fail, stops
# exploring. Confirming every point once (a quarter of the trials) cost 15% of the front's regret
# after 50 trials on the development landscapes; these three cost 7% (BENCHMARKS.md). Three is
# also model.DETERMINISTIC_REPEATS: three exact repeats take the objective as deterministic.
FRONT_CONFIRMATIONS = 3


class _LazyBits(list):
    """The bits of a mask whose length is not known yet, given as the objective asks for them:
    all 1 (the full mask, ``fill=1``) or drawn one at a time keeping layer 0 (``fill=None``)."""

    def __init__(self, fill: int | None) -> None:
        super().__init__()
        self.fill = fill


class AlphaNASSampler(BaseGASampler):
    """Elitist evolutionary search over layer masks (AlphaNAS), noise-aware, with all state in
    the storage.

    **Generation 0** proposes the full mask first (``include_full_mask``), then distinct masks in
    which every layer is kept with probability ``init_keep_prob`` (optionally tilted towards the
    bottom layers by ``init_bottom_bias``). The all-zero mask is never proposed. With
    ``surrogate=False`` these are plain random draws. With the surrogate (single-objective
    studies), ``n_candidates`` masks are drawn from that distribution per proposal and one is
    chosen: until the value model can be fitted (three masks that recorded a value, one of them
    feasible), the one farthest in Hamming distance from every mask evaluated or pending other
    than the full mask (origin ``"design"``); afterwards the one the model scores best (origin
    ``"screened"``).

    **Generation g > 0** has as elites the ``n_elites`` best eligible masks evaluated so far (a
    mask is eligible when it was feasible, COMPLETE, at least as often as not). Each child copies
    one elite and flips bits. With ``surrogate=True`` (the default) masks are ranked by the
    value model's posterior estimate from ALL evidence (see below), not by single draws; with
    ``surrogate=False`` by the mean of their own evaluations (the plain seed algorithm, where a
    mask is evaluated once). A single-objective study ranks by value; a two-objective one (e.g.
    maximize accuracy, minimize parameters) by non-dominated rank of (estimated first objective,
    other objectives), ties broken by crowding distance. An elite survives without being
    trained again.

    **Noise.** One brief fine-tune is a noisy measurement of a mask. The value model
    (:class:`~alphanas_optuna.sampler.model.ValueModel`) treats every evaluation as the mask's
    value plus noise, the value as a linear function of the bits and neighbouring pairs plus a
    mask-specific deviation, and estimates the noise from repeated evaluations: a mask measured
    once borrows strength from similar masks, one measured several times keeps its own mean, and
    noise-free evaluations are taken as they are. Once three repeats have reproduced their values
    exactly (and none differed), the objective is taken as deterministic: noise 0, so no further
    re-evaluations. Trials that name the settings they were measured under (user attribute
    ``fidelity``, a string, as :class:`~alphanas_optuna.AlphaNASObjective` records it) and differ
    in them (a study resumed with longer training, say) are put on the newest settings' scale by
    one offset per earlier fidelity, fitted with the value model (without it, as with
    ``surrogate=False``, from the masks measured under several fidelities, see
    :meth:`~alphanas_optuna.sampler.evidence.Evidence.paired_offsets`: the plain algorithm
    repeats a mask only once every mask has been evaluated, so its values stay pooled unless
    masks are enqueued again); trials that name none count as the newest's.
    :func:`alphanas_optuna.winner` names the study's answer with the same estimates.

    **Re-evaluation** (``surrogate=True``, ``reevaluation_share > 0``, single-objective studies;
    two-objective ones only confirm a few points of their front, see below). From generation 1 on,
    the sampler may measure an evaluated mask again instead of a new one, in at most
    ``reevaluation_share`` of the trials. A leader (the mask with the best estimate) evaluated
    only once, on an objective that is not deterministic, is measured again first (unless
    another trial is measuring it), so that the answer is not one lucky draw. Otherwise, when
    several masks could plausibly be the best (posterior means within two standard errors of
    the best one's), the one that looks best in a posterior draw is measured again (Thompson
    sampling for the best arm), but only while all re-evaluations so far stay within
    ``reevaluation_share`` of the trials after generation 0 (spread over the search rather than
    spent at once on the first generation's few feasible, mostly poor, masks), and only when a
    repeat promises more than a new mask: the largest knowledge gradient of measuring an
    evaluated mask again (the expected lift of the best estimate) is at least that of the most
    promising candidate child, weighted by its chance of being feasible. Early in a search new
    masks usually promise more; as the estimates sharpen, repeats do. (The leader here
    is the sampler's; :func:`alphanas_optuna.winner` may also set aside masks whose accuracy is
    too close to a study's floor.) A re-evaluation is an ordinary trial of the same mask,
    counted in the budget. Its proposal has origin ``"reevaluation"`` and ``"evaluation": k``
    (the mask's k-th repeat), which :func:`evaluation_index` reads: the objective trains it with
    another seed and never answers it from a cache of earlier results.

    **Children (``surrogate=False``, studies of other directions than those below, and whenever
    the model cannot choose: not fitted yet, or no free candidate within the radius).** The
    parent is an elite drawn uniformly at random; the child flips ``1 + Binomial(L - 1,
    (mutation_rate - 1) / (L - 1))`` of its ``L`` bits (at least one, ``mutation_rate`` on
    average); the first such child not evaluated yet is proposed.

    **Children (``surrogate=True``, two-objective studies whose second objective is minimised,
    such as accuracy and parameters).** As for single-objective studies below (the elites'
    neighbourhood, scored by the value model of the first objective), but the score is the
    expected lift of the front: one evaluation's knowledge gradient summed over every size
    budget the candidate meets, against the best estimate of a mask of at most that many layers
    (:func:`~alphanas_optuna.sampler.proposals.front_knowledge_gradient`; the number of kept
    layers stands for the size, which the second objective measures), times the chance of
    feasibility (a budget no evaluated mask meets yet counts from the lowest estimate). A
    two-objective study is read as a menu, one answer per size
    (:func:`alphanas_optuna.winners`): a child that lifts a small budget's answer lifts every
    larger budget's too. Before its children, such a study measures again up to
    :data:`FRONT_CONFIRMATIONS` points of its front that were measured once (the most uncertain
    first, within ``reevaluation_share``; a failed attempt counts): these repeats set the noise
    scale, as a single-objective study's leader confirmations do. There are no other
    re-evaluations (the rules under "Re-evaluation" above are single-objective), and no retries
    (those weigh a repeat against the best single value). Two workers deciding at the same
    moment may each confirm a point, one more than the cap (as for ``reevaluation_share``).

    **Children (``surrogate=True``, single-objective studies).** The candidates are every free
    mask within ``search_radius`` flips of some elite (at most ``n_candidates``, drawn at random
    when there are more); the one with the best score is proposed, and its parent is the elite
    nearest to it. The score is the knowledge gradient of one evaluation of the candidate (the
    expected lift of the best estimate so far, from the value model's prediction and its
    uncertainty, net of the noise one evaluation carries; see
    :func:`~alphanas_optuna.sampler.proposals.knowledge_gradient_new`) times the probability of
    feasibility (a logistic regression on the bits and a one-hot of the depth, since pruning
    follows mostly from depth). The same score weighs a new mask against a repeat (above), and
    screens generation 0's random draws once the model is fitted. A mask evaluated once, and
    infeasible that time with a measured value far under every feasible one (by more than the
    failed-fine-tune test below allows), stays a candidate: a brief fine-tune sometimes
    collapses on its seed alone, and a mask whose neighbours all train may be worth a second
    run. It is scored the same way, but for its value predicted from the other masks (the value
    model with its own row left out, since that row, the collapsed run, would rule it out), and
    its chance of feasibility counts the failure. (A run just under the floor is evidence of
    where the mask lies; one stopped before it measured anything, over the parameter limit say,
    would be stopped again; and nothing is retried until repeated runs of some mask have
    differed, nor once the objective is taken as deterministic.) Such a repeat has origin
    ``"retry"`` and, like a re-evaluation, the next ``"evaluation"`` index (a new training
    seed).

    **Pruned and failed trials.** A PRUNED trial counts as an evaluation of its mask: it fills
    its generation and makes the mask infeasible evidence; if it recorded what it measured
    (user attribute ``quality``, or ``accuracy`` in a two-objective study, as
    :class:`~alphanas_optuna.AlphaNASObjective` does) that value is evidence too, unless the mask
    was feasible on other evaluations and the value lies far below theirs (more than four
    standard deviations of the gap, widened to the Student-t quantile while the noise estimate
    rests on few repeats): that is a fine-tune that failed on its seed (it fell to the majority
    class, say), which counts against the mask's feasibility but not in its value
    (:meth:`~alphanas_optuna.sampler.evidence.Evidence.records`). A mask that
    was never feasible enters the value model once, at the lowest value of the feasible masks
    or its own if higher (it is worse by an unknown margin; see
    :meth:`~alphanas_optuna.sampler.evidence.Evidence.model_data`), so that the model learns
    what dropping its layers costs instead of proposing more children that drop them; but a
    mask whose one run collapsed (as for a retry, above) where the feasibility model, fitted
    without that run, gives it better than even odds of training is taken for a failed
    fine-tune and left out of the value model (it still counts in the feasibility model:
    :meth:`~alphanas_optuna.sampler.digest.StudyDigest.lapses`). A FAIL trial counts for
    nothing: its mask may be proposed again.

    **No duplicates.** Re-evaluations and retries aside (above), a new mask is never one that
    was evaluated, or that another trial is evaluating (RUNNING) or will evaluate (WAITING with
    fixed parameters), while a free mask is reachable: the sampler re-draws and, failing that,
    takes the free mask nearest to an elite. Only when every mask has been evaluated does it
    repeat one (with a warning, once). When another worker may be deciding at the same time,
    the sampler re-reads the storage after writing its proposal and, if another trial took the
    same mask meanwhile, chooses again (up to four tries). A generation may overfill by up to
    the number of workers, as with NSGA-II.

    **Mask length.** Learnt from finished trials, from the proposals of pending ones, or from
    ``n_layers``. The first trial of a study is the full mask, whose length does not matter;
    with ``include_full_mask=False`` and no ``n_layers`` its bits are drawn one at a time,
    keeping layer 0.

    **Storage keys** (everything another process needs; nothing else is kept on ``self`` but
    memos rebuildable from them):

    * ``AlphaNASSampler:proposal`` (trial system attribute): ``{"mask": "110111", "origin":
      "full" | "design" | "screened" | "random" | "child" | "retry" | "reevaluation", "parent":
      <trial number or None>, "generation": <g>, "evaluation": <k>}``, written once, when the
      objective asks for the first mask bit (once every mask has been evaluated, an origin
      other than ``"reevaluation"`` ends in ``" (repeat)"``).
    * ``AlphaNASSampler:generation`` (trial system attribute): the generation of a trial whose
      mask did not come from the sampler (enqueued or fixed parameters), written when it ends.
    * ``AlphaNASSampler:parent:<g>`` (study system attribute): the trial ids standing for
      generation ``g``'s elites (each elite mask's latest feasible trial), written once by the
      first worker that needs them.

    Args:
        population_size: Trials per generation (at least 2).
        n_elites: Elites that parent the next generation; default ``population_size // 2``.
        mutation_rate: Expected number of flipped bits per child, at least 1.
        init_keep_prob: Chance that a random initial mask keeps a layer, in (0, 1].
        init_bottom_bias: Tilt of the initial keep probabilities towards the bottom layers, in
            [0, 1]: layer ``i`` of ``L`` is kept with probability ``init_keep_prob +
            init_bottom_bias * (0.5 - i / (L - 1))``, clipped to [0.02, 0.98].
        include_full_mask: Propose the full mask (all layers kept) first.
        surrogate: Use the value model: noise-aware estimates, model-chosen masks
            (single-objective studies) and re-evaluations. ``False`` gives the plain seed
            algorithm.
        reevaluation_share: Largest share of the trials spent re-evaluating masks, in [0, 1);
            only a new leader's confirmation may use it before the trials after generation 0
            allow; 0 turns re-evaluation off. (Retries of a mask whose one run failed are
            children, outside this share.)
        search_radius: With the surrogate, the candidate children are the masks within this many
            flips of an elite (at least 1; ``mutation_rate`` applies to the plain algorithm).
        n_candidates: Most masks the model scores per proposal (at least 1).
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
        reevaluation_share: float = 0.25,
        search_radius: int = 3,
        n_candidates: int = 2048,
        prefix: str = DEFAULT_PREFIX,
        n_layers: int | None = None,
        seed: int | None = None,
        fallback_sampler: BaseSampler | None = None,
    ) -> None:
        if not is_integer(population_size) or population_size < 2:
            raise ValueError(f"population_size must be an integer >= 2, got {population_size!r}")
        if n_elites is None:
            n_elites = max(1, population_size // 2)
        if not is_integer(n_elites) or not 1 <= n_elites <= population_size:
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
        if not _is_real(reevaluation_share) or not 0.0 <= reevaluation_share < 1.0:
            raise ValueError(f"reevaluation_share must be in [0, 1), got {reevaluation_share!r}")
        if not is_integer(search_radius) or search_radius < 1:
            raise ValueError(f"search_radius must be an integer >= 1, got {search_radius!r}")
        if not is_integer(n_candidates) or n_candidates < 1:
            raise ValueError(f"n_candidates must be an integer >= 1, got {n_candidates!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        if n_layers is not None and (not is_integer(n_layers) or n_layers < 1):
            raise ValueError(f"n_layers must be a positive integer or None, got {n_layers!r}")
        if seed is not None and not is_integer(seed):
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
        self._reevaluation_share = float(reevaluation_share)
        self._n_candidates = int(n_candidates)
        self._search_radius = int(search_radius)
        self._prefix = prefix
        self._n_layers = None if n_layers is None else int(n_layers)
        self._rng = LazyRandomState(seed)
        self._fallback = fallback_sampler or RandomSampler(seed=seed)
        self._lock = threading.RLock()
        # In-process memos, all rebuildable from the storage.
        self._digests: dict[tuple[int, int], StudyDigest] = {}
        # Masks decided for trials this process is running: (study key, trial id) -> bits (or
        # lazy bits). Trial ids are unique within a storage only: two in-memory studies that
        # share this object both have a trial 0.
        self._decided: dict[tuple[int, int, int], list[int]] = {}
        # Trials that started through this object (``before_trial``) with no proposal or
        # generation stored, and are not decided yet: deciding their mask skips reading their
        # system attributes back (Optuna hands ``sample_independent`` a trial whose attributes
        # load lazily, one storage query per trial; about 4% of an ask on a SQLite study).
        self._fresh: set[tuple[int, int, int]] = set()
        self._warned_exhausted = False
        # Number of the last trial this object decided a mask for, per study (a hint only).
        self._last_numbers: dict[tuple[int, int], int] = {}
        self._storages: dict[tuple[int, int], Any] = {}
        # The snapshot of the decision in progress (under the lock), so that reading the elites
        # does not read the storage again.
        self._deciding: tuple[tuple[int, int], Snapshot] | None = None
        # Per study: the number of this object's last trial when nothing else was pending then
        # and that trial has been folded into the digest by after_trial. The next trial, if it is
        # numbered right after it, needs no storage read: no other trial can have started or
        # finished in between (a lone worker's ask is then as cheap as it can be).
        self._solo: dict[tuple[int, int], int] = {}
        self._alone: dict[tuple[int, int], bool] = {}

    # ----------------------------------------------------------------------------------------------
    # Public helpers

    @classmethod
    def proposal_key(cls) -> str:
        """The trial system attribute that holds a proposal (see the class docstring)."""
        return f"{cls.__name__}:proposal"

    @property
    def n_elites(self) -> int:
        """Number of elites per generation."""
        return self._n_elites

    @property
    def prefix(self) -> str:
        """Parameter-name prefix of the mask bits."""
        return self._prefix

    @property
    def noise_aware(self) -> bool:
        """Whether masks are ranked by the value model's estimates (``surrogate=True``)."""
        return self._surrogate

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
            key = self._trial_key(study, trial)
            decided = self._decided.get(key)
            fresh = key in self._fresh
            if decided is None and not fresh:
                decided = self._stored_proposal(key, trial)
            if decided is None:
                self._fresh.discard(key)
                decided = self._decide(study, trial, fresh)
            return self._bit(decided, index)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        # ``trial`` holds its system attributes already (read with the trial). A trial re-queued
        # after its worker died (``alphanas search`` retries it) carries the proposal it had, and
        # must finish that mask.
        attrs = trial.system_attrs
        if self.proposal_key() not in attrs and self._get_generation_key() not in attrs:
            with self._lock:
                self._fresh.add(self._trial_key(study, trial))
        self._fallback.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            key = self._trial_key(study, trial)
            decided = self._decided.pop(key, None)
            self._fresh.discard(key)
            self._fold_own(study, trial, state, values, decided is not None)
        final = mask_from_params(trial.params, self._prefix)
        if isinstance(decided, _LazyBits) and final:
            # The mask's length was unknown when it was decided: record the mask as it came out.
            proposal = dict(trial.system_attrs.get(self.proposal_key(), {}))
            proposal["mask"] = format_mask(final)
            study._storage.set_trial_system_attr(trial._trial_id, self.proposal_key(), proposal)
        # A trial whose mask did not come from this sampler (enqueued, fixed parameters) still
        # belongs to a generation, so that it fills it and may become an elite.
        if (
            state in EVALUATED
            and decided is None
            and self._generation_of(trial) is None
            and self._mask_of(trial) is not None
        ):
            self.get_trial_generation(study, trial)
        self._fallback.after_trial(study, trial, state, values)

    def _fold_own(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
        mine: bool,
    ) -> None:
        """Fold a trial this object decided into the digest as it finishes, so that a lone
        worker's next decision needs no storage read (see ``_solo``)."""
        key = self._study_key(study)
        digest = self._digests.get(key)
        self._solo.pop(key, None)
        if not mine or digest is None or not self._alone.get(key, False):
            return
        if trial._trial_id not in digest.finished_ids:
            finished = copy.copy(trial)
            finished.state = state
            finished.values = None if state != TrialState.COMPLETE else values
            digest.finished_ids.add(trial._trial_id)
            mask = self._mask_of(finished)
            reevaluation = origin_of(finished, self.proposal_key()) == "reevaluation"
            if state not in EVALUATED:
                digest.n_failed_reevaluations += reevaluation  # as take_snapshot counts them
            elif mask is not None:
                digest.fold(
                    finished, mask, self._generation_of(finished), study.directions, reevaluation
                )
        self._solo[key] = trial.number

    # ----------------------------------------------------------------------------------------------
    # BaseGASampler interface

    def get_trial_generation(self, study: Study, trial: FrozenTrial) -> int:
        """The trial's generation; a new trial joins the newest one until it holds
        ``population_size`` evaluated trials. Unlike the base class, PRUNED trials count as
        evaluated (an infeasible mask fills its generation); FAIL trials do not."""
        generation = self._generation_of(trial)
        if generation is not None:
            return generation
        generation = self._current_generation(self._snapshot(study, trial).digest)
        study._storage.set_trial_system_attr(
            trial._trial_id, self._get_generation_key(), generation
        )
        return generation

    def get_population(self, study: Study, generation: int) -> list[FrozenTrial]:
        """The COMPLETE (feasible) trials of ``generation``."""
        digest = self._snapshot(study, None).digest
        ids = digest.complete_by_generation.get(generation, [])
        return [digest.trials_by_id[tid] for tid in ids]

    def get_parent_population(self, study: Study, generation: int) -> list[FrozenTrial]:
        """The elites of ``generation``, cached in the study's system attributes: the first
        worker that needs them computes them with :meth:`select_parent` and stores them; every
        other worker, and every later process, reads the same list."""
        if generation == 0:
            return []
        digest = self._current_snapshot(study).digest
        ids = digest.parent_ids.get(generation)
        if ids is None:
            key = self._get_parent_cache_key_prefix() + str(generation)
            ids = study._storage.get_study_system_attrs(study._study_id).get(key)
            if ids is None:
                ids = [t._trial_id for t in self.select_parent(study, generation)]
                study._storage.set_study_system_attr(study._study_id, key, ids)
            digest.parent_ids[generation] = list(ids)
        return [digest.trials_by_id[tid] for tid in ids if tid in digest.trials_by_id]

    def select_parent(self, study: Study, generation: int) -> list[FrozenTrial]:
        """The ``n_elites`` best eligible masks evaluated so far (the one elite rule, in
        :func:`~alphanas_optuna.sampler.elites.select_elites`), each as its latest feasible
        trial."""
        snapshot = self._current_snapshot(study)
        digest = snapshot.digest
        if snapshot.n_layers is None:
            return []
        estimates = self._estimates(digest, snapshot.n_layers, study.directions)
        if not estimates.records:
            return []
        loss = -estimates.means[:, None]
        if len(study.directions) > 1:
            signs = np.array(
                [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions[1:]]
            )
            extra = np.array([r.extra for r in estimates.records], dtype=float)
            loss = np.concatenate([loss, extra * signs], axis=1)
        chosen = select_elites(loss, self._n_elites)
        return [digest.trials_by_id[estimates.records[i].representative] for i in chosen]

    # ----------------------------------------------------------------------------------------------
    # Deciding a mask

    def _decide(self, study: Study, trial: FrozenTrial, fresh: bool = False) -> list[int]:
        key = self._study_key(study)
        digest = self._digests.get(key)
        if digest is not None and self._solo.pop(key, None) == trial.number - 1:
            snapshot = Snapshot(
                digest=digest, pending=set(), n_layers=self._n_layers or digest.n_layers
            )
        else:
            snapshot = self._snapshot(study, trial)
        self._alone[key] = not snapshot.others_pending
        # One storage read per decision: the elites are read from this snapshot too.
        self._deciding = (self._study_key(study), snapshot)
        try:
            return self._decide_with(study, trial, snapshot, fresh)
        finally:
            self._deciding = None

    def _current_snapshot(self, study: Study) -> Snapshot:
        deciding = self._deciding
        if deciding is not None and deciding[0] == self._study_key(study):
            return deciding[1]
        return self._snapshot(study, None)

    def _decide_with(
        self, study: Study, trial: FrozenTrial, snapshot: Snapshot, fresh: bool = False
    ) -> list[int]:
        n = snapshot.n_layers
        # The generation is stored with the proposal (one storage write per trial, not two).
        generation = None if fresh else self._generation_of(trial)
        if generation is None:
            generation = self._current_generation(snapshot.digest)
        rng = self._rng.rng
        taken = snapshot.digest.evaluated | snapshot.pending

        if n is None:
            # Nothing tells the mask length yet: the full mask works for any length (unless
            # another pending trial has it); otherwise draw bits as the objective asks for them.
            full_first = self._include_full_mask and not (
                snapshot.others_pending and self._full_claimed_elsewhere(study, trial)
            )
            decided = _LazyBits(fill=1 if full_first else None)
            self._decided[self._trial_key(study, trial)] = decided
            self._write_proposal(
                study, trial, None, "full" if full_first else "random", None, generation, 0
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
        bits: list[int] = []
        for attempt in range(_MAX_CLAIMS):
            code, origin, parent = self._choose(study, snapshot, generation, n, taken, rng)
            if exhausted and origin != "reevaluation":
                origin += " (repeat)"
            record = snapshot.digest.evidence.record(n, code)
            evaluation = 0 if record is None else record.n_evaluations
            bits = list(mask_from_code(code, n))
            self._decided[self._trial_key(study, trial)] = bits
            self._write_proposal(study, trial, bits, origin, parent, generation, evaluation)
            # Optimistic claim: check that no other trial (another worker's, say) took the same
            # mask since the snapshot; if one did, give it up and choose again.
            if exhausted or attempt == _MAX_CLAIMS - 1 or not shared:
                break
            latest = study._storage.get_all_trials(study._study_id, deepcopy=False)
            if not claimed_elsewhere(
                latest,
                trial._trial_id,
                code,
                snapshot.digest,
                prefix=self._prefix,
                proposal_key=self.proposal_key(),
            ):
                break
            taken = taken | {code}
            snapshot.pending.add(code)
        return bits

    def _write_proposal(
        self,
        study: Study,
        trial: FrozenTrial,
        bits: list[int] | None,
        origin: str,
        parent: FrozenTrial | None,
        generation: int,
        evaluation: int,
    ) -> None:
        study._storage.set_trial_system_attr(
            trial._trial_id,
            self.proposal_key(),
            {
                "mask": None if bits is None else format_mask(bits),
                "origin": origin,
                "parent": None if parent is None else parent.number,
                "generation": generation,
                "evaluation": evaluation,
            },
        )

    def _choose(
        self,
        study: Study,
        snapshot: Snapshot,
        generation: int,
        n: int,
        taken: set[int],
        rng: np.random.RandomState,
    ) -> tuple[int, str, FrozenTrial | None]:
        full = (1 << n) - 1
        if generation == 0 and self._include_full_mask and full not in taken:
            return full, "full", None
        model_on = self._uses_model(study) and n <= _MAX_MODEL_LAYERS
        front_on = self._uses_front_model(study) and n <= _MAX_MODEL_LAYERS
        if generation >= REEVALUATE_FROM_GENERATION:
            elites = self.get_parent_population(study, generation)
            elite_codes = [self._code_of(e) for e in elites]
            keep = [i for i, c in enumerate(elite_codes) if c is not None and c >> n == 0]
            elites = [elites[i] for i in keep]
            codes = [int(elite_codes[i]) for i in keep]  # type: ignore[arg-type]
            if front_on and codes:
                estimates = self._estimates(snapshot.digest, n, study.directions)
                if estimates.model is not None and len(estimates.means):
                    again = self._front_confirmation(snapshot, estimates)
                    if again is not None:
                        return again
                    candidates, parents = proposals.neighbourhood(
                        codes, n, self._search_radius, taken, self._n_candidates, rng
                    )
                    if len(candidates):
                        score = self._front_acquisition(snapshot.digest, estimates, candidates, n)
                        best = int(np.argmax(score))
                        return int(candidates[best]), "child", elites[int(parents[best])]
            # The model's candidate children (codes, parent indices, scores), scored once: for
            # a child, and weighed against a repeat.
            neighbours = None
            estimates = self._estimates(snapshot.digest, n, study.directions) if model_on else None
            # A mask whose one evaluation fell far under every feasible one is a candidate
            # again (see the class docstring), but not on a deterministic objective: it would
            # fail the same way again.
            model = None if estimates is None else estimates.model
            retryable: set[int] = set()
            if model is not None and model.noise_variance > 0.0:
                retryable = snapshot.digest.evidence.collapsed_once(n) - snapshot.pending
            if codes and model is not None:
                candidates, parents = proposals.neighbourhood(
                    codes,
                    n,
                    self._search_radius,
                    taken - retryable if retryable else taken,
                    self._n_candidates,
                    rng,
                )
                if len(candidates):
                    score = self._acquisition(snapshot.digest, estimates, candidates, n, retryable)
                    neighbours = (candidates, parents, score)
            again = self._reevaluation(study, snapshot, n, rng, neighbours)
            if again is not None:
                return again
            if codes:
                code, k = self._child(codes, n, taken, rng, neighbours)
                return code, "retry" if code in retryable else "child", elites[k]
        if model_on:
            chosen = self._initial(study, snapshot, n, taken, rng)
            if chosen is not None:
                return chosen[0], chosen[1], None
        probs = proposals.keep_probabilities(n, self._init_keep_prob, self._init_bottom_bias)
        return proposals.random_mask(n, probs, taken, rng), "random", None

    def _reevaluation(
        self,
        study: Study,
        snapshot: Snapshot,
        n: int,
        rng: np.random.RandomState,
        neighbours: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> tuple[int, str, FrozenTrial | None] | None:
        """A mask to measure again (see the class docstring), or None."""
        if not self._surrogate or self._reevaluation_share <= 0.0:
            return None
        digest = snapshot.digest
        spent = digest.n_reevaluations + snapshot.n_pending_reevaluations
        total = digest.n_evaluated + snapshot.n_pending + 1
        if spent + 1 > self._reevaluation_share * total:
            return None
        estimates = self._estimates(digest, n, study.directions)
        if estimates.model is None or len(study.directions) > 1:
            return None
        pending = snapshot.pending
        records = estimates.records
        available = (
            np.array([r.code not in pending for r in records])
            if pending
            else np.ones(len(records), dtype=bool)
        )
        # Evaluations, not only those with a value: a re-evaluation stopped early by a pruner
        # measured nothing, but should not make the leader be confirmed again and again.
        pick = proposals.leader_to_confirm(
            estimates.means,
            estimates.sds,
            np.array([r.n_evaluations for r in estimates.records]),
            available,
            confirm_below=CONFIRM_BELOW,
        )
        if pick is None:
            # The contenders' share is of the trials after generation 0, so that these
            # re-evaluations are spread over the search: counted from the first trial, the
            # allowance could go at once on the first generation's few feasible, mostly poor,
            # masks (in a large space the first leaders are far from the answer).
            first = digest.generation_counts.get(0, 0) + snapshot.n_pending_first_generation
            after_first = total - first
            if spent + 1 > self._reevaluation_share * after_first:
                return None
            pick = proposals.choose_reevaluation(
                estimates.means,
                estimates.sds,
                available,
                rng,
                z=CONTENDER_Z,
                max_contenders=MAX_CONTENDERS,
            )
            if pick is not None and not self._worth_repeating(estimates, available, neighbours):
                return None
        if pick is None:
            return None
        record = estimates.records[pick]
        return record.code, "reevaluation", digest.trials_by_id[record.representative]

    def _worth_repeating(
        self,
        estimates: Estimates,
        available: np.ndarray,
        neighbours: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> bool:
        """Whether measuring a contender again promises more than the most promising new child:
        the larger knowledge gradient (expected lift of the best estimate from one evaluation,
        see :func:`~.proposals.knowledge_gradient`). Early in a search, when new masks may well
        beat every estimate, new masks win; as the estimates sharpen, repeats do."""
        model = estimates.model
        assert model is not None
        noise_var = model.noise_variance
        if noise_var <= 0.0:
            return False
        gain = proposals.knowledge_gradient(estimates.means, estimates.sds, noise_var)
        gain = gain[available]
        if not len(gain):
            return False
        if neighbours is None:
            return True
        # The candidates' scores are their feasibility-weighted knowledge gradients.
        return float(gain.max()) >= float(neighbours[2].max())

    def _child(
        self,
        elites: list[int],
        n: int,
        taken: set[int],
        rng: np.random.RandomState,
        neighbours: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> tuple[int, int]:
        """A child of the elites (code, index of its parent): the best-scored of the model's
        candidate ``neighbours`` (codes, parent indices, scores) if there are any, else random
        flips."""
        if neighbours is not None:
            candidates, parents, score = neighbours
            best = int(np.argmax(score))
            return int(candidates[best]), int(parents[best])
        for _ in range(proposals.MAX_REDRAWS):
            k = int(rng.randint(len(elites)))
            child = elites[k] ^ proposals.flip_pattern(n, self._mutation_rate, rng)
            if child != 0 and child not in taken:
                return child, k
        k = int(rng.randint(len(elites)))
        return proposals.nearest_free(elites[k], n, taken, rng), k

    def _initial(
        self,
        study: Study,
        snapshot: Snapshot,
        n: int,
        taken: set[int],
        rng: np.random.RandomState,
    ) -> tuple[int, str] | None:
        """A generation-0 mask with the model on: a space-filling design, then screened draws
        from the initial distribution."""
        probs = proposals.keep_probabilities(n, self._init_keep_prob, self._init_bottom_bias)
        candidates = proposals.initial_candidates(n, probs, self._n_candidates, taken, rng)
        if len(candidates) == 0:
            return None
        estimates = self._estimates(snapshot.digest, n, study.directions)
        if estimates.model is None:
            full = (1 << n) - 1
            others = [m for m in taken if 0 < m <= full and m != full]
            return int(candidates[proposals.farthest(candidates, others)]), "design"
        score = self._acquisition(snapshot.digest, estimates, candidates, n)
        return int(candidates[int(np.argmax(score))]), "screened"

    def _acquisition(
        self,
        digest: StudyDigest,
        estimates: Estimates,
        candidates: np.ndarray,
        n: int,
        retryable: AbstractSet[int] = frozenset(),
    ) -> np.ndarray:
        """The knowledge gradient of one evaluation of each candidate, times its chance of being
        feasible (an infeasible mask lifts nothing): how much the best estimate is expected to
        rise. A ``retryable`` candidate (see :meth:`~.evidence.Evidence.collapsed_once`) is
        predicted from the other masks alone (its own collapsed run entered the fit as a value
        under every feasible one, which would rule out ever measuring it again), where the fit
        holds its row (a row of an earlier fidelity, or one newer than the fit, is not taken
        out). Unlike one posterior draw per proposal (Thompson sampling, which this replaced),
        it weighs a candidate's predicted value and its uncertainty against the noise of the
        evaluation that would measure it; on the development landscapes (sigma 0.02) it lowered
        the named mask's regret by 12.4% +- 1.4% after 25 trials and 9.2% +- 1.7% after 50
        (BENCHMARKS.md)."""
        model = estimates.model
        assert model is not None
        mean, sd = model.predict(candidates)
        rows = estimates.fitted_rows
        again = [c for c in retryable if c in rows]
        if again:
            pick = np.flatnonzero(np.isin(candidates, again))
            if len(pick):
                fitted = np.array([rows[int(c)] for c in candidates[pick]])
                mean[pick], sd[pick] = model.predict_left_out(
                    candidates[pick], fitted[:, 0], fitted[:, 1]
                )
        best = float(estimates.means.max()) if len(estimates.means) else float(mean.max())
        p = digest.p_feasible(n, candidates)
        return proposals.knowledge_gradient_new(mean, sd, p, best, model.noise_variance)

    def _front_acquisition(
        self, digest: StudyDigest, estimates: Estimates, candidates: np.ndarray, n: int
    ) -> np.ndarray:
        """Two-objective studies: :func:`~.proposals.front_knowledge_gradient` of each candidate
        on the first objective, with the number of kept layers as the size (the second
        objective, parameters, grows with it)."""
        model = estimates.model
        assert model is not None
        mean, sd = model.predict(candidates)
        best = proposals.best_within(self._depths(estimates), estimates.means, n)
        # A budget that no evaluated mask meets yet is measured from the lowest estimate.
        best[~np.isfinite(best)] = float(estimates.means.min())
        return proposals.front_knowledge_gradient(
            mean,
            sd,
            digest.p_feasible(n, candidates),
            proposals.popcount(candidates),
            best,
            model.noise_variance,
        )

    def _front_confirmation(
        self, snapshot: Snapshot, estimates: Estimates
    ) -> tuple[int, str, FrozenTrial | None] | None:
        """Two-objective studies: a point of the front (per depth the best estimate, where it
        beats every shallower one) measured fewer than :data:`CONFIRM_BELOW` times, on an
        objective that is not deterministic, while the study has fewer than
        :data:`FRONT_CONFIRMATIONS` re-evaluations and within ``reevaluation_share`` of the
        trials: the most uncertain such point, or None."""
        model = estimates.model
        assert model is not None
        if self._reevaluation_share <= 0.0 or model.noise_variance <= 0.0:
            return None
        digest = snapshot.digest
        spent = digest.n_reevaluations + snapshot.n_pending_reevaluations
        total = digest.n_evaluated + snapshot.n_pending + 1
        # Failed attempts count towards the cap: a repeat that fails every time (out of memory,
        # say) must not take every trial.
        attempts = spent + digest.n_failed_reevaluations
        if spent + 1 > self._reevaluation_share * total or attempts >= FRONT_CONFIRMATIONS:
            return None
        waiting = [
            i
            for i in proposals.front_points(self._depths(estimates), estimates.means)
            if estimates.records[i].n_evaluations < CONFIRM_BELOW
            and estimates.records[i].code not in snapshot.pending
        ]
        if not waiting:
            return None
        pick = max(waiting, key=lambda i: float(estimates.sds[i]))
        record = estimates.records[pick]
        return record.code, "reevaluation", digest.trials_by_id[record.representative]

    @staticmethod
    def _depths(estimates: Estimates) -> np.ndarray:
        codes = np.array([r.code for r in estimates.records], dtype=np.int64)
        return proposals.popcount(codes)

    def _uses_front_model(self, study: Study) -> bool:
        directions = study.directions
        return self._surrogate and len(directions) == 2 and directions[1] == StudyDirection.MINIMIZE

    def _estimates(
        self, digest: StudyDigest, n: int, directions: Sequence[StudyDirection]
    ) -> Estimates:
        """The eligible masks' estimates, refitted when :func:`~.model.refit_due` says so."""
        key = ("estimates", n, tuple(directions), self._surrogate)
        fitted = digest.memo.get(key)
        if fitted is not None:
            fitted_at, cached = fitted
            if not refit_due(fitted_at, digest.n_evaluated):
                return cached
        pooled = self._surrogate and n <= _MAX_MODEL_LAYERS
        estimates = digest.estimate(n, pooled=pooled)
        digest.memo = {key: (digest.n_evaluated, estimates)}
        return estimates

    def _uses_model(self, study: Study) -> bool:
        return self._surrogate and len(study.directions) == 1

    def _full_claimed_elsewhere(self, study: Study, trial: FrozenTrial) -> bool:
        """Whether another pending trial was given the full mask before its length was known."""
        others = study._storage.get_all_trials(
            study._study_id, deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)
        )
        for t in others:
            proposal = t.system_attrs.get(self.proposal_key(), None)
            if t._trial_id != trial._trial_id and isinstance(proposal, dict):
                if proposal.get("origin") == "full":
                    return True
        return False

    # ----------------------------------------------------------------------------------------------
    # Reading the storage

    def _current_generation(self, digest: StudyDigest) -> int:
        if not digest.generation_counts:
            return 0
        newest = max(digest.generation_counts)
        assert self._population_size is not None
        if digest.generation_counts[newest] < self._population_size:
            return newest
        return newest + 1

    def _trial_key(self, study: Study, trial: FrozenTrial) -> tuple[int, int, int]:
        return (*self._study_key(study), trial._trial_id)

    def _study_key(self, study: Study) -> tuple[int, int]:
        """Key of a study's caches. The storage is kept alive with the caches, so its ``id`` is
        never recycled for another storage while they exist."""
        key = (id(study._storage), study._study_id)
        self._storages.setdefault(key, study._storage)
        return key

    def _snapshot(self, study: Study, trial: FrozenTrial | None) -> Snapshot:
        with self._lock:
            key = self._study_key(study)
            digest = self._digests.setdefault(key, StudyDigest())
            return take_snapshot(
                digest,
                study._get_trials(deepcopy=False, use_cache=True),
                None if trial is None else trial._trial_id,
                prefix=self._prefix,
                proposal_key=self.proposal_key(),
                generation_key=self._get_generation_key(),
                directions=study.directions,
                n_layers=self._n_layers,
            )

    def _generation_of(self, trial: FrozenTrial) -> int | None:
        return generation_of(trial, self.proposal_key(), self._get_generation_key())

    def _mask_of(self, trial: FrozenTrial) -> tuple[int, ...] | None:
        return mask_of(trial, self._prefix, self.proposal_key())

    def _code_of(self, trial: FrozenTrial) -> int | None:
        mask = self._mask_of(trial)
        return None if mask is None else mask_to_code(mask)

    def _stored_proposal(self, key: tuple[int, int, int], trial: FrozenTrial) -> list[int] | None:
        """The mask decided for this trial (``key``) by an earlier sampler object, if any
        (rare)."""
        proposal = trial.system_attrs.get(self.proposal_key(), None)
        if not isinstance(proposal, dict):
            return None
        text = proposal.get("mask")
        if isinstance(text, str) and text:
            bits = [int(c) for c in text]
            self._decided[key] = bits
            return bits
        return None

    def _bit(self, decided: list[int], index: int) -> int:
        if isinstance(decided, _LazyBits):
            # Mask length unknown: give each bit when the objective asks for it.
            rng = self._rng.rng
            while len(decided) <= index:
                i = len(decided)
                if decided.fill is not None:
                    decided.append(decided.fill)
                else:
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


def evaluation_index(trial: optuna.trial.BaseTrial) -> int:
    """Which evaluation of its mask ``trial`` is: 0 for a mask's first, k for its k-th repeat
    (a re-evaluation or a retry; read from the sampler's proposal; 0 for trials whose mask did
    not come from :class:`AlphaNASSampler`). Call it after the mask was suggested. An objective
    trains the k-th evaluation with another seed, and never answers a repeat from earlier
    results."""
    storage = getattr(trial, "storage", None)
    trial_id = getattr(trial, "_trial_id", None)
    if storage is None or trial_id is None:
        attrs = getattr(trial, "system_attrs", {})
    else:
        attrs = storage.get_trial_system_attrs(trial_id)
    proposal = attrs.get(PROPOSAL_KEY)
    if isinstance(proposal, dict) and is_integer(proposal.get("evaluation")):
        return int(proposal["evaluation"])
    return 0


def _is_real(value: Any) -> bool:
    return (is_integer(value) or isinstance(value, (float, np.floating))) and not isinstance(
        value, bool
    )
