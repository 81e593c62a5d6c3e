"""winner(study) and winners(study): a study's answer from all its evidence."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from alphanas_optuna import AlphaNASSampler, suggest_mask, winner, winners
from alphanas_optuna.answer import NoWinnerError
from alphanas_optuna.mask import format_mask

optuna.logging.set_verbosity(optuna.logging.WARNING)

N = 6
DIST = {f"layer_{i:02d}": CategoricalDistribution((0, 1)) for i in range(N)}
WEIGHTS = np.array([0.05, 0.04, 0.03, 0.02, -0.01, 0.005])


def _add(study: optuna.Study, mask: tuple[int, ...], value: float, **attrs: object) -> None:
    study.add_trial(
        create_trial(
            value=value,
            params={f"layer_{i:02d}": b for i, b in enumerate(mask)},
            distributions=DIST,
            user_attrs=dict(attrs),
        )
    )


def test_a_lucky_single_draw_is_not_the_answer_but_best_trial_is() -> None:
    """Any sampler's study: repeated evaluations are averaged and single draws pooled."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize")
    good = (1, 1, 1, 1, 0, 1)  # the optimum
    lucky = (1, 1, 1, 0, 0, 1)  # 0.02 worse, measured once 0.025 high
    for code in range(1, 2**N):
        mask = tuple((code >> i) & 1 for i in range(N))
        if mask in (good, lucky):
            continue
        _add(study, mask, float(WEIGHTS @ mask) + 0.01 * float(rng.standard_normal()))
    for d in (-0.003, 0.002, 0.0, -0.004):
        _add(study, good, float(WEIGHTS @ good) + d)
    _add(study, lucky, float(WEIGHTS @ lucky) + 0.025)
    assert study.best_trial.number == len(study.trials) - 1  # the lucky draw
    answer = winner(study)
    assert answer.mask == format_mask(good)
    assert answer.n_evaluations == 4
    assert answer.trials == tuple(t.number for t in study.trials[-5:-1])
    assert answer.mean == pytest.approx(float(WEIGHTS @ good) - 0.00125)
    assert 0 < answer.stderr < 0.01
    assert answer.n_layers == 5
    # Without pooling, each mask's own mean: the lucky one wins.
    assert winner(study, pooled=False).mask == format_mask(lucky)


def test_values_of_earlier_training_settings_are_put_on_the_newest_ones_scale() -> None:
    """A study resumed with longer training: every value of the new settings is 0.04 higher.
    Pooled as they are, a mask measured only under the new settings looks best; with an
    offset per fidelity the answer is the mask that is best under either."""
    masks = [tuple((code >> i) & 1 for i in range(N)) for code in range(1, 2**N)]
    ranked = sorted(masks, key=lambda m: float(WEIGHTS @ m), reverse=True)
    best = ranked[0]
    # The best mask was measured under the old settings only, the next five under the new ones
    # only; five more under both.
    old = [best, *ranked[6:35]]
    new = ranked[1:6] + ranked[30:45]

    def run(named: bool) -> optuna.Study:
        study = optuna.create_study(direction="maximize")
        for mask in old:
            _add(study, mask, float(WEIGHTS @ mask), **({"fidelity": "old"} if named else {}))
        for mask in new:
            value = float(WEIGHTS @ mask) + 0.04
            _add(study, mask, value, **({"fidelity": "new"} if named else {}))
        return study

    pooled = winner(run(named=False))
    assert pooled.mask != format_mask(best)  # a mask of the new settings' higher values
    answer = winner(run(named=True))
    assert answer.mask == format_mask(best)
    # On the newest settings' scale: about the best mask's old value plus the 0.04.
    assert answer.quality == pytest.approx(float(WEIGHTS @ best) + 0.04, abs=0.01)
    assert answer.mean == pytest.approx(float(WEIGHTS @ best))  # its plain mean, unshifted
    # Without the value model, the masks measured under both settings give the offset.
    plain = winner(run(named=True), pooled=False)
    assert plain.mask == format_mask(best)
    assert plain.quality == pytest.approx(float(WEIGHTS @ best) + 0.04)
    assert winner(run(named=False), pooled=False).mask != format_mask(best)


def test_ties_go_to_the_mask_evaluated_first() -> None:
    """Equal estimates: the mask evaluated first is the answer, as the sampler's leader is (a
    stable order, whatever the number of masks)."""
    study = optuna.create_study(direction="maximize")
    masks = [tuple((code >> i) & 1 for i in range(N)) for code in range(1, 2**N)]
    for k, mask in enumerate(masks):
        _add(study, mask, 0.0 if k < 40 else 1.0)
    assert winner(study, pooled=False).mask == format_mask(masks[40])


def test_accuracy_and_params_come_from_the_trials_attributes() -> None:
    study = optuna.create_study(direction="maximize")
    lam = 0.002
    for code in range(1, 2**N):
        mask = tuple((code >> i) & 1 for i in range(N))
        n_params = 10e6 + 2e6 * sum(mask)
        accuracy = 0.8 + float(WEIGHTS @ mask)
        quality = accuracy - lam * n_params / 1e6
        _add(study, mask, quality, accuracy=accuracy, n_params=n_params, quality=quality)
    answer = winner(study, pooled=False)
    best = max(study.trials, key=lambda t: t.value)
    assert answer.mask == format_mask(tuple(best.params[f"layer_{i:02d}"] for i in range(N)))
    assert answer.quality == pytest.approx(best.value)
    assert answer.accuracy == pytest.approx(best.user_attrs["accuracy"])
    assert answer.n_params == best.user_attrs["n_params"]


def test_a_mask_pruned_more_often_than_not_is_never_the_answer() -> None:
    study = optuna.create_study(direction="maximize")
    _add(study, (1, 1, 1, 1, 1, 1), 0.5)
    _add(study, (1, 0, 0, 0, 0, 0), 0.9)
    for _ in range(2):
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={f"layer_{i:02d}": int(i == 0) for i in range(N)},
                distributions=DIST,
                user_attrs={"quality": 0.4},
            )
        )
    assert winner(study, pooled=False).mask == "111111"


def test_the_recorded_accuracy_floor_needs_clearing_by_a_standard_error() -> None:
    """A mask measured just above the floor may be below it: with the floor recorded, the answer
    is one whose estimated accuracy clears it."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("alphanas_config", {"fitness": {"min_accuracy": 0.70}})
    rng = np.random.default_rng(1)
    for code in range(1, 2**N):
        mask = tuple((code >> i) & 1 for i in range(N))
        depth = sum(mask)
        accuracy = 0.62 + 0.03 * depth + 0.005 * float(rng.standard_normal())
        quality = accuracy - 0.02 * depth  # fewer layers pay off, down to the floor
        if accuracy < 0.70:
            study.add_trial(
                create_trial(
                    state=TrialState.PRUNED,
                    params={f"layer_{i:02d}": b for i, b in enumerate(mask)},
                    distributions=DIST,
                    user_attrs={"accuracy": accuracy, "quality": quality},
                )
            )
        else:
            _add(study, mask, quality, accuracy=accuracy, quality=quality)
    answer = winner(study)
    assert answer.accuracy is not None
    assert answer.accuracy - answer.stderr >= 0.70
    study.set_user_attr("alphanas_config", {})
    unguarded = winner(study)
    assert unguarded.quality >= answer.quality


def test_winners_per_depth_on_the_front_of_a_two_objective_study() -> None:
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=AlphaNASSampler(seed=0)
    )

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        mask = suggest_mask(trial, N)
        return 0.7 + float(WEIGHTS @ mask), 1e6 * (10 + sum(mask))

    study.optimize(objective, n_trials=40)
    front = winners(study, pooled=False)
    depths = [w.n_layers for w in front]
    assert depths == sorted(depths) and len(set(depths)) == len(depths)
    assert all(a.quality < b.quality for a, b in zip(front, front[1:], strict=False))
    assert all(a.n_params < b.n_params for a, b in zip(front, front[1:], strict=False))
    for w in front:
        # The best evaluated mask of its depth.
        same = [
            t.values[0]
            for t in study.trials
            if sum(t.params[f"layer_{i:02d}"] for i in range(N)) == w.n_layers
        ]
        assert w.quality == pytest.approx(max(same))
        assert w.accuracy == w.quality
    # A single-objective study has the same front, by the accuracy its trials recorded.
    single = optuna.create_study(direction="maximize")
    _add(single, (1, 0, 0, 0, 0, 0), 0.5, accuracy=0.52, quality=0.5, n_params=1e6)
    _add(single, (1, 1, 0, 0, 0, 0), 0.49, accuracy=0.53, quality=0.49, n_params=2e6)
    _add(single, (1, 0, 1, 0, 0, 0), 0.45, accuracy=0.49, quality=0.45, n_params=2e6)
    _add(single, (1, 1, 1, 0, 0, 0), 0.40, accuracy=0.46, quality=0.40, n_params=3e6)
    assert [w.mask for w in winners(single, pooled=False)] == ["100000", "110000"]


def test_no_answer_without_an_eligible_mask() -> None:
    study = optuna.create_study(direction="maximize")
    with pytest.raises(NoWinnerError, match="no mask"):
        winner(study)
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={f"layer_{i:02d}": 1 for i in range(N)},
            distributions=DIST,
        )
    )
    with pytest.raises(NoWinnerError, match="1 trials"):
        winner(study)
