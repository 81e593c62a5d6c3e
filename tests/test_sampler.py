"""Tests of AlphaNASSampler: Optuna's generic sampler tests plus one test per documented behaviour."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase
from optuna.trial import TrialState

from alphanas_optuna import AlphaNASSampler, suggest_mask
from alphanas_optuna.mask import format_mask, mask_from_params
from alphanas_optuna.sampler import _select_elites

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "sampler_worker.py"
GEN = "AlphaNASSampler:generation"
PROPOSAL = "AlphaNASSampler:proposal"
WEIGHTS = np.array([0.9, -0.4, 0.7, 0.3, -0.2, 0.5, 0.1, -0.6, 0.8, 0.2])

optuna.logging.set_verbosity(optuna.logging.WARNING)


class TestGenericSampler(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    """Non-mask parameters go to the fallback sampler, so Optuna's generic tests apply."""

    @pytest.fixture
    def sampler(self) -> Callable[[], optuna.samplers.BaseSampler]:
        return lambda: AlphaNASSampler(seed=0)


def _objective(n_layers: int = 8, prune_full: bool = True) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        mask = suggest_mask(trial, n_layers)
        if prune_full and sum(mask) == n_layers:
            raise optuna.TrialPruned()
        return float(np.dot(WEIGHTS[:n_layers], mask))

    return objective


def _masks(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[str]:
    return [
        format_mask(mask_from_params(t.params))
        for t in study.trials
        if states is None or t.state in states
    ]


def _run(n_trials: int, n_layers: int = 8, **kwargs: Any) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=AlphaNASSampler(**kwargs))
    study.optimize(_objective(n_layers), n_trials=n_trials)
    return study


def test_mask_parameters_and_fallback_sampler() -> None:
    calls: list[str] = []

    class Recording(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
            calls.append(param_name)
            return super().sample_independent(study, trial, param_name, param_distribution)

    sampler = AlphaNASSampler(seed=1, fallback_sampler=Recording(seed=1))
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        mask = suggest_mask(trial, 6)
        return sum(mask) * lr

    study.optimize(objective, n_trials=4)
    assert sorted(study.trials[0].params) == ["layer_00", "layer_01", "layer_02"] + [
        "layer_03",
        "layer_04",
        "layer_05",
        "lr",
    ]
    assert calls == ["lr"] * 4  # Mask bits never reach the fallback.
    for t in study.trials:
        assert t.system_attrs[PROPOSAL]["mask"] == format_mask(mask_from_params(t.params))


def test_generation_zero_full_mask_first_then_distinct_random() -> None:
    study = _run(10, seed=3, surrogate=False)
    masks = _masks(study)
    assert masks[0] == "11111111"
    assert len(set(masks)) == 10
    assert "00000000" not in masks
    assert all(_gen(t) == 0 for t in study.trials)
    assert [t.system_attrs[PROPOSAL]["origin"] for t in study.trials] == ["full"] + ["random"] * 9


def test_one_sampler_object_serves_many_studies_one_after_another() -> None:
    """Each study starts afresh, also when a dead study's storage id is recycled by Python."""
    import gc

    sampler = AlphaNASSampler(seed=0, population_size=4)
    for _ in range(12):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(_objective(4), n_trials=8)
        masks = _masks(study)
        assert masks[0] == "1111"
        assert len(set(masks)) == 8
        assert [_gen(t) for t in study.trials[:4]] == [0, 0, 0, 0]
        del study
        gc.collect()


def test_include_full_mask_false_and_unknown_length_keeps_layer_zero() -> None:
    study = _run(6, seed=0, include_full_mask=False)
    masks = _masks(study)
    assert masks[0][0] == "1"  # Length unknown in the first trial: layer 0 is kept.
    assert "11111111" not in masks[1:]
    assert len(set(masks)) == 6


def test_init_keep_prob_and_bottom_bias_shape_generation_zero() -> None:
    study = _run(
        40,
        n_layers=10,
        seed=0,
        population_size=40,
        init_keep_prob=0.5,
        init_bottom_bias=1.0,
        surrogate=False,
    )
    bits = np.array([[int(c) for c in m] for m in _masks(study)[1:]])
    assert bits[:, :3].mean() > 0.75 and bits[:, -3:].mean() < 0.25
    sparse = _run(30, n_layers=10, seed=0, population_size=30, init_keep_prob=0.2, surrogate=False)
    assert np.array([[int(c) for c in m] for m in _masks(sparse)[1:]]).mean() < 0.35


@pytest.mark.parametrize("surrogate", [False, True])
def test_children_copy_an_elite_and_flip_bits(surrogate: bool) -> None:
    study = _run(40, seed=5, surrogate=surrogate, mutation_rate=1.0)
    attrs = _study_attrs(study)
    by_number = {t.number: t for t in study.trials}
    children = [t for t in study.trials if t.system_attrs[PROPOSAL]["origin"] == "child"]
    assert len(children) >= 25
    for child in children:
        g = _gen(child)
        assert g >= 1
        elite_ids = attrs[f"AlphaNASSampler:parent:{g}"]
        parent = by_number[child.system_attrs[PROPOSAL]["parent"]]
        assert parent._trial_id in elite_ids
        flipped = sum(a != b for a, b in zip(_mask(child), _mask(parent), strict=True))
        assert flipped >= 1
        if not surrogate:
            assert flipped <= 2  # One flip, or the nearest free mask when all neighbours are taken.


def _gen(trial: optuna.trial.FrozenTrial) -> int:
    """A trial's generation: stored with its proposal, or (enqueued trials) as an attribute."""
    proposal = trial.system_attrs.get(PROPOSAL, {})
    if proposal.get("generation") is not None:
        return int(proposal["generation"])
    return int(trial.system_attrs[GEN])


def _study_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def _mask(trial: optuna.trial.FrozenTrial) -> tuple[int, ...]:
    mask = mask_from_params(trial.params)
    assert mask is not None
    return mask


def test_elites_are_the_best_feasible_of_all_earlier_generations() -> None:
    study = _run(50, seed=2, surrogate=False)
    attrs = _study_attrs(study)
    for g in range(1, 5):
        earlier = [t for t in study.trials if t.state == TrialState.COMPLETE and _gen(t) < g]
        best = sorted(earlier, key=lambda t: -t.value)[:5]
        elite_ids = attrs[f"AlphaNASSampler:parent:{g}"]
        assert sorted(elite_ids) == sorted(t._trial_id for t in best)
    # An elite survives: the best trial so far keeps parenting without being evaluated again.
    assert len(set(_masks(study))) == 50


def test_mutation_rate_sets_expected_flips() -> None:
    study = _run(60, n_layers=10, seed=0, surrogate=False, mutation_rate=3.0)
    by_number = {t.number: t for t in study.trials}
    flips = [
        sum(
            a != b
            for a, b in zip(
                _mask(t), _mask(by_number[t.system_attrs[PROPOSAL]["parent"]]), strict=True
            )
        )
        for t in study.trials
        if t.system_attrs[PROPOSAL]["origin"] == "child"
    ]
    assert min(flips) >= 1
    assert 2.2 < np.mean(flips) < 3.8


def test_pruned_trials_fill_generations_and_are_never_elites() -> None:
    sampler = AlphaNASSampler(seed=0, population_size=4, surrogate=False)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        mask = suggest_mask(trial, 6)
        if trial.number < 8 or mask[0] == 0:
            raise optuna.TrialPruned()
        return float(sum(mask))

    study.optimize(objective, n_trials=20)
    generations = [_gen(t) for t in study.trials]
    assert generations == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert len(set(_masks(study))) == 20  # Pruned masks are never proposed again.
    attrs = _study_attrs(study)
    pruned_ids = {t._trial_id for t in study.trials if t.state == TrialState.PRUNED}
    for g in range(1, 5):
        assert not set(attrs[f"AlphaNASSampler:parent:{g}"]) & pruned_ids


def test_failed_trials_count_for_nothing() -> None:
    sampler = AlphaNASSampler(seed=0, population_size=4)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    failed: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        mask = suggest_mask(trial, 3)
        if trial.number in (1, 2):
            failed.append(format_mask(mask))
            raise RuntimeError("out of memory")
        return float(sum(mask))

    study.optimize(objective, n_trials=6, catch=(RuntimeError,))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 2
    # Four evaluated trials make generation 0; the two failures did not fill it.
    assert [_gen(t) for t in study.trials] == [0] * 6
    # A failed mask does not block: with 7 masks, the first 7 evaluations cover them all.
    study.optimize(objective, n_trials=3)
    evaluated = _masks(study, (TrialState.COMPLETE, TrialState.PRUNED))
    assert len(set(evaluated)) == len(evaluated) == 7
    assert set(failed) <= set(evaluated)


def test_running_masks_are_avoided_and_exhaustion_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    study = optuna.create_study(direction="maximize", sampler=AlphaNASSampler(seed=0, n_layers=2))
    # Two layers: three non-empty masks. All three asked before any is told.
    trials = [study.ask() for _ in range(3)]
    masks = [format_mask(suggest_mask(t, 2)) for t in trials]
    assert sorted(masks) == ["01", "10", "11"]
    for t, m in zip(trials, masks, strict=True):
        study.tell(t, float(m.count("1")))
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            study.optimize(_objective(2, prune_full=False), n_trials=3)
    finally:
        optuna.logging.disable_propagation()
    warnings = [r for r in caplog.records if "repeats masks" in r.getMessage()]
    assert len(warnings) == 1
    assert all(m in ("01", "10", "11") for m in _masks(study))


def test_enqueued_masks_count_as_evaluated() -> None:
    study = optuna.create_study(direction="maximize", sampler=AlphaNASSampler(seed=0))
    study.enqueue_trial({f"layer_{i:02d}": b for i, b in enumerate((1, 0, 1, 0, 1, 0, 1, 0))})
    study.optimize(_objective(), n_trials=12)
    masks = _masks(study)
    assert masks[0] == "10101010"
    assert len(set(masks)) == 12
    assert _gen(study.trials[0]) == 0
    # The enqueued trial's generation is an attribute; the sampler's own trials store theirs with
    # the proposal (a single storage write per trial).
    assert study.trials[0].system_attrs[GEN] == 0
    assert all(GEN not in t.system_attrs for t in study.trials[1:])


@pytest.mark.parametrize("surrogate", [False, True])
def test_reproducible_by_seed(surrogate: bool) -> None:
    a = _masks(_run(35, seed=11, surrogate=surrogate))
    b = _masks(_run(35, seed=11, surrogate=surrogate))
    c = _masks(_run(35, seed=12, surrogate=surrogate))
    assert a == b
    assert a != c


def test_surrogate_finds_a_planted_optimum_faster_than_plain() -> None:
    """On an additive landscape the screened children reach the optimum sooner (mean of seeds)."""

    def regret(surrogate: bool) -> float:
        out = []
        for seed in range(4):
            study = _run(40, n_layers=10, seed=seed, surrogate=surrogate)
            out.append(WEIGHTS[WEIGHTS > 0].sum() - study.best_value)
        return float(np.mean(out))

    assert regret(True) < regret(False)


def test_two_objective_elites_by_rank_then_crowding() -> None:
    directions = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    points = [(0.90, 100), (0.85, 60), (0.80, 40), (0.89, 90), (0.70, 30), (0.84, 80), (0.60, 90)]
    trials = [
        optuna.trial.create_trial(values=list(v), params={}, distributions={}) for v in points
    ]
    for i, t in enumerate(trials):
        t.number = i
    front = {0, 1, 2, 3, 4}  # 5 and 6 are dominated.
    chosen = {t.number for t in _select_elites(trials, directions, 5)}
    assert chosen == front
    # Three of the front of five: the two extremes (infinite crowding distance) come first.
    chosen3 = {t.number for t in _select_elites(trials, directions, 3)}
    assert {0, 4} <= chosen3 and chosen3 <= front
    # And the whole sampler runs on a two-objective study.
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=AlphaNASSampler(seed=0)
    )

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        mask = suggest_mask(trial, 8)
        return float(np.dot(WEIGHTS[:8], mask)), float(sum(mask))

    study.optimize(objective, n_trials=30)
    assert len(set(_masks(study))) == 30
    assert _study_attrs(study)["AlphaNASSampler:parent:2"]


BAD_ARGUMENTS = [
    ({"population_size": 1}, "population_size"),
    ({"population_size": 2.5}, "population_size"),
    ({"population_size": True}, "population_size"),
    ({"n_elites": 0}, "n_elites"),
    ({"n_elites": 11}, "n_elites"),
    ({"mutation_rate": 0.5}, "mutation_rate"),
    ({"mutation_rate": float("nan")}, "mutation_rate"),
    ({"mutation_rate": float("inf")}, "mutation_rate"),
    ({"init_keep_prob": 0.0}, "init_keep_prob"),
    ({"init_keep_prob": 1.5}, "init_keep_prob"),
    ({"init_bottom_bias": -0.1}, "init_bottom_bias"),
    ({"init_bottom_bias": 2}, "init_bottom_bias"),
    ({"include_full_mask": 1}, "include_full_mask"),
    ({"surrogate": "yes"}, "surrogate"),
    ({"n_candidates": 0}, "n_candidates"),
    ({"search_radius": 0}, "search_radius"),
    ({"search_radius": 1.5}, "search_radius"),
    ({"prefix": ""}, "prefix"),
    ({"prefix": 3}, "prefix"),
    ({"n_layers": 0}, "n_layers"),
    ({"seed": "1"}, "seed"),
    ({"fallback_sampler": "random"}, "fallback_sampler"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_ARGUMENTS)
def test_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AlphaNASSampler(**kwargs)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        AlphaNASSampler(10)  # type: ignore[misc]


def test_no_heavy_imports() -> None:
    code = (
        "import sys, alphanas_optuna; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------------
# Several processes on one storage


def _worker(url: str, n_trials: int, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, "s", str(n_trials), str(seed)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def test_resume_in_a_new_process_continues_the_generations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _finish(_worker(url, 20, seed=0))  # Two generations of 10, then the process exits.
    study = optuna.load_study(study_name="s", storage=url)
    assert [_gen(t) for t in study.trials] == [0] * 10 + [1] * 10
    _finish(_worker(url, 10, seed=1))
    study = optuna.load_study(study_name="s", storage=url)
    assert [_gen(t) for t in study.trials[20:]] == [2] * 10
    masks = _masks(study)
    assert len(masks) == 30 and len(set(masks)) == 30
    # Generation 2's elites are the best of generations 0 and 1, read from the storage.
    best = sorted(
        (t for t in study.trials[:20] if t.state == TrialState.COMPLETE), key=lambda t: -t.value
    )[:5]
    assert sorted(_study_attrs(study)["AlphaNASSampler:parent:2"]) == sorted(
        t._trial_id for t in best
    )


def test_three_processes_share_one_journal_storage(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'journal.log'}"
    # Create the study first so that the workers do not race on creating it.
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    )
    optuna.create_study(storage=storage, study_name="s", direction="maximize")
    procs = [_worker(url, 12, seed=s) for s in range(3)]
    for p in procs:
        _finish(p)
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 36
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    masks = _masks(study)
    assert len(masks) - len(set(masks)) <= 3  # At most a few same-instant races.
    generations = [_gen(t) for t in study.trials]
    assert max(generations) >= 2
    for g in set(generations):
        assert generations.count(g) <= 10 + 3  # Overfill bounded by the number of workers.


# --------------------------------------------------------------------------------------------------
# The surrogate (default) path


def test_surrogate_generation_zero_is_a_design_then_screened() -> None:
    study = _run(10, seed=4)
    origins = [t.system_attrs[PROPOSAL]["origin"] for t in study.trials]
    # The full mask is pruned by _objective; three feasible masks are needed to fit the model.
    assert origins[:4] == ["full", "design", "design", "design"]
    assert set(origins[4:]) == {"screened"}
    assert all(_gen(t) == 0 for t in study.trials)
    design = [np.array([int(c) for c in m]) for m in _masks(study)[1:4]]
    # Space-filling: each design mask is far from the earlier ones (8 layers).
    assert int(np.abs(design[0] - design[1]).sum()) >= 6
    assert min(int(np.abs(design[2] - d).sum()) for d in design[:2]) >= 3
    assert len(set(_masks(study))) == 10


def test_surrogate_children_lie_within_search_radius() -> None:
    study = _run(50, n_layers=10, seed=1, search_radius=2)
    by_number = {t.number: t for t in study.trials}
    children = [t for t in study.trials if t.system_attrs[PROPOSAL]["origin"] == "child"]
    assert len(children) == 40
    attrs = _study_attrs(study)
    for child in children:
        parent = by_number[child.system_attrs[PROPOSAL]["parent"]]
        assert parent._trial_id in attrs[f"AlphaNASSampler:parent:{_gen(child)}"]
        flipped = sum(a != b for a, b in zip(_mask(child), _mask(parent), strict=True))
        assert 1 <= flipped <= 2


def test_running_sums_give_the_batch_ridge_fit() -> None:
    from alphanas_optuna.sampler import _features, _Moments

    rng = np.random.default_rng(0)
    masks = rng.integers(1, 2**6, 40)
    x = _features(masks, 6)
    y = x @ rng.normal(size=x.shape[1]) + rng.normal(0, 0.1, len(masks))
    moments = _Moments(x.shape[1])
    for row, value in zip(x, y, strict=True):
        moments.add(row, float(value))
    for sign in (1.0, -1.0):
        x_mean, coef, cov, y_mean, scale, best = moments.ridge(sign)
        ys = (sign * y - (sign * y).mean()) / (sign * y).std()
        xc = x - x.mean(axis=0)
        gram = xc.T @ xc + np.eye(x.shape[1])
        expected = np.linalg.solve(gram, xc.T @ ys)
        np.testing.assert_allclose(coef, expected, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(x_mean, x.mean(axis=0))
        assert y_mean == pytest.approx((sign * y).mean())
        assert scale == pytest.approx(y.std())
        assert best == pytest.approx(ys.max())
        resid = ys - xc @ expected
        noise = max(float(resid @ resid) / (len(ys) - 1), 0.05)
        np.testing.assert_allclose(cov, noise * np.linalg.inv(gram), rtol=1e-6, atol=1e-12)


def test_feasibility_model_learns_that_deep_masks_are_pruned() -> None:
    from alphanas_optuna.sampler import _MaskMoments, _Surrogate

    rng = np.random.default_rng(1)
    moments = _MaskMoments(8)
    for m in rng.permutation(np.arange(1, 256))[:80]:
        depth = bin(int(m)).count("1")
        moments.add(int(m), None if depth >= 6 else float(depth))
    model = _Surrogate.fit(moments, 1.0)
    assert model is not None
    deep = np.array([0b01111111, 0b11111101, 0b11101111], dtype=np.int64)
    shallow = np.array([0b00001111, 0b01010101, 0b11100001], dtype=np.int64)
    assert model.p_feasible(deep).max() < 0.2
    assert model.p_feasible(shallow).min() > 0.8


def test_surrogate_wastes_fewer_trials_on_infeasible_masks_than_plain() -> None:
    def objective(trial: optuna.Trial) -> float:
        mask = suggest_mask(trial, 10)
        if sum(mask) >= 7:  # Too big.
            raise optuna.TrialPruned()
        return float(np.dot(WEIGHTS, mask))

    def n_pruned(surrogate: bool) -> int:
        total = 0
        for seed in range(3):
            sampler = AlphaNASSampler(seed=seed, surrogate=surrogate)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective, n_trials=40)
            total += sum(t.state == TrialState.PRUNED for t in study.trials)
        return total

    assert n_pruned(True) < n_pruned(False)


def test_a_mask_claimed_by_another_trial_meanwhile_is_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sampler = AlphaNASSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective(), n_trials=12)
    claims: list[int] = []

    def claimed_once(study: Any, trial: Any, mask: int, digest: Any) -> bool:
        claims.append(mask)
        return len(claims) == 1  # Another worker took the first choice.

    monkeypatch.setattr(sampler, "_claimed_elsewhere", claimed_once)
    sampler._last_numbers.clear()  # As if this were a new worker: the claim is checked.
    trial = study.ask()
    mask = suggest_mask(trial, 8)
    assert len(claims) == 2 and claims[0] != claims[1]
    from alphanas_optuna.sampler import _to_int

    assert _to_int(mask) == claims[1]
    stored = study._storage.get_trial(trial._trial_id).system_attrs[PROPOSAL]["mask"]
    assert stored == format_mask(mask)


def test_a_single_worker_does_not_reread_the_storage_per_ask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sampler = AlphaNASSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    calls: list[int] = []
    original = sampler._claimed_elsewhere

    def counting(*args: Any) -> bool:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(sampler, "_claimed_elsewhere", counting)
    study.optimize(_objective(), n_trials=20)
    assert len(calls) <= 1  # Only the first ask of this object checks its claim.
    digest = next(iter(sampler._digests.values()))
    assert digest.scan_from == 19  # Trials finished before the last ask are never rescanned.
