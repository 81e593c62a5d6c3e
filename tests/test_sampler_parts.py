"""The sampler's parts on their own: the value and feasibility models against values computed by
hand, the proposal functions, the elite rule, and the storage digest."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from alphanas_optuna.mask import (
    format_mask,
    is_integer,
    mask_from_code,
    mask_to_code,
    parse_mask,
    validate_mask,
)
from alphanas_optuna.sampler import PROPOSAL_KEY, proposals
from alphanas_optuna.sampler.digest import (
    StudyDigest,
    claimed_elsewhere,
    observation,
    take_snapshot,
)
from alphanas_optuna.sampler.elites import crowding_distance, non_domination_rank, select_elites
from alphanas_optuna.sampler.evidence import Evidence, estimate, t_quantile
from alphanas_optuna.sampler.model import (
    FEASIBILITY_PRIOR_SD,
    FeasibilityModel,
    ValueModel,
    feasibility_features,
    logistic_map,
    noise_variance,
    pooled_variance,
    value_features,
)

MAX = [StudyDirection.MAXIMIZE]

# --------------------------------------------------------------------------------------------------
# One mask representation


def test_mask_codes_round_trip_and_one_integer_check() -> None:
    assert mask_to_code((1, 1, 0)) == 3
    assert mask_to_code((0, 0, 1, 1)) == 12
    assert mask_from_code(12, 4) == (0, 0, 1, 1)
    for code in range(1, 64):
        assert mask_to_code(mask_from_code(code, 6)) == code
        assert parse_mask(format_mask(mask_from_code(code, 6))) == mask_from_code(code, 6)
    with pytest.raises(ValueError, match="does not fit"):
        mask_from_code(16, 4)
    assert is_integer(3) and is_integer(np.int64(3))
    assert not is_integer(True) and not is_integer(1.0) and not is_integer("1")
    # The bit check and the sampler's argument checks agree: 1.0 is not a bit.
    with pytest.raises(ValueError, match="mask bit 0 is 1.0"):
        validate_mask((1.0, 1))
    assert validate_mask((np.int64(1), 0)) == (1, 0)


# --------------------------------------------------------------------------------------------------
# The value model


def test_value_features_by_hand() -> None:
    # Mask 0b011 of 3 layers: bits (1, 1, 0), neighbour products (1*1, 1*0).
    np.testing.assert_array_equal(value_features(np.array([3]), 3), [[1, 1, 1, 0, 1, 0]])
    np.testing.assert_array_equal(value_features(np.array([5]), 3), [[1, 1, 0, 1, 0, 0]])


def test_noise_variance_pools_repeats_with_its_prior() -> None:
    # (1 * 0.25 + (0 + 0.5 + 0.25)) / (1 + (0 + 2 + 1)) = 1 / 4
    assert noise_variance(np.array([1, 3, 2]), np.array([0.0, 0.5, 0.25]), 0.25, 1.0) == 0.25
    # Without repeats the prior is all there is.
    assert noise_variance(np.array([1, 1]), np.array([0.0, 0.0]), 0.3, 0.5) == pytest.approx(0.3)


def test_pooled_variance_by_hand() -> None:
    # (0.5 * 0.2 + 0.3) / (0.5 + 3) = 0.4 / 3.5
    assert pooled_variance(0.3, 3.0, 0.2, 0.5) == pytest.approx(0.4 / 3.5)
    assert pooled_variance(0.3, 3.0, 0.2, 0.0) == pytest.approx(0.1)
    assert pooled_variance(0.0, 0.0, 0.2, 0.5) == pytest.approx(0.2)
    # Neither evidence nor prior: nothing to pool, and no division by zero.
    assert pooled_variance(0.0, 0.0, 0.2, 0.0) == 0.0


def test_noise_variance_is_zero_once_three_repeats_reproduced_their_values() -> None:
    # Two exact repeats: (0.5 * 0.3 + 0) / (0.5 + 2) = 0.06, the prior still speaks.
    assert noise_variance(np.array([2, 2]), np.array([0.0, 0.0]), 0.3, 0.5) == pytest.approx(0.06)
    # Three: a deterministic objective.
    assert noise_variance(np.array([2, 3]), np.array([0.0, 0.0]), 0.3, 0.5) == 0.0
    assert noise_variance(np.array([4]), np.array([0.0]), 0.3, 0.5) == 0.0
    # Any spread at all and it is noise again: (0.15 + 1e-6) / 3.5.
    assert noise_variance(np.array([2, 3]), np.array([0.0, 1e-6]), 0.3, 0.5) == pytest.approx(
        (0.15 + 1e-6) / 3.5
    )


def test_posterior_shrinks_a_mask_towards_the_linear_part_by_hand() -> None:
    n = 2
    beta = np.array([0.0, 1.0, 0.0, 0.0])  # standardised: prediction 1 for a mask keeping layer 0
    model = ValueModel(
        n=n, beta=beta, cov=np.zeros((4, 4)), sigma2=1.0, tau2=1.0, y_mean=10.0, y_scale=2.0
    )
    # Mask 0b01 measured once at 16 (standardised 3): rho = 1 / (1 + 1/1) = 0.5,
    # mean = 1 + 0.5 * (3 - 1) = 2 -> 10 + 2 * 2 = 14; var = tau2 (1 - rho) = 0.5 -> sd 2 sqrt(.5).
    mean, sd = model.posterior(np.array([1]), np.array([1.0]), np.array([16.0]))
    assert mean[0] == pytest.approx(14.0)
    assert sd[0] == pytest.approx(2.0 * math.sqrt(0.5))
    # Measured three times: rho = 1 / (1 + 1/3) = 0.75 -> 1 + 0.75 * 2 = 2.5 -> 15; var 0.25.
    mean, sd = model.posterior(np.array([1]), np.array([3.0]), np.array([16.0]))
    assert mean[0] == pytest.approx(15.0)
    assert sd[0] == pytest.approx(2.0 * 0.5)
    # Not evaluated: the prediction, with variance tau2 + x' cov x = 1.
    mean, sd = model.predict(np.array([1, 2]))
    np.testing.assert_allclose(mean, [12.0, 10.0])
    np.testing.assert_allclose(sd, [2.0, 2.0])


def test_fit_solves_the_weighted_ridge_at_its_variance_components() -> None:
    rng = np.random.default_rng(0)
    n = 5
    codes = rng.permutation(np.arange(1, 2**n))[:20]
    counts = rng.integers(1, 4, len(codes)).astype(float)
    truth = value_features(codes, n) @ rng.normal(size=2 * n)
    means = truth + rng.normal(0, 0.3, len(codes)) / np.sqrt(counts)
    ssd = 0.09 * (counts - 1)
    model = ValueModel.fit(n, codes, counts, means, ssd)
    assert model is not None
    y = (means - means.mean()) / means.std()
    x = value_features(codes, n)
    w = 1.0 / (model.tau2 + model.sigma2 / counts)
    # Intercept nearly free, bits at precision 1, neighbouring pairs at 4.
    prior = np.diag([1e-4] + [1.0] * n + [4.0] * (n - 1))
    expected = np.linalg.solve(x.T @ (x * w[:, None]) + prior, x.T @ (w * y))
    np.testing.assert_allclose(model.beta, expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.cov, np.linalg.inv(x.T @ (x * w[:, None]) + prior))
    assert model.y_mean == pytest.approx(means.mean())
    assert model.y_scale == pytest.approx(means.std())
    # sigma2 is the pooled within-mask variance (standardised) with its prior.
    expected_sigma2 = noise_variance(counts, ssd / means.std() ** 2, 0.25, 0.5)
    assert model.sigma2 == pytest.approx(expected_sigma2)
    assert model.tau2 >= 0.05


def test_predict_left_out_is_the_fit_without_the_row() -> None:
    """Against a refit of the weighted ridge without each row, at the fitted variance
    components (what the closed form holds fixed)."""
    rng = np.random.default_rng(1)
    n = 5
    codes = rng.permutation(np.arange(1, 2**n))[:18]
    counts = rng.integers(1, 4, len(codes)).astype(float)
    means = value_features(codes, n) @ rng.normal(size=2 * n) + rng.normal(0, 0.3, len(codes))
    means[3] = means.min() - 2.0  # a collapsed run entered far below the rest
    model = ValueModel.fit(n, codes, counts, means, 0.09 * (counts - 1))
    assert model is not None
    got_mean, got_sd = model.predict_left_out(codes, counts, means)
    y = (means - model.y_mean) / model.y_scale
    x = value_features(codes, n)
    w = 1.0 / (model.tau2 + model.sigma2 / counts)
    prior = np.diag([1e-4] + [1.0] * n + [4.0] * (n - 1))
    for i in range(len(codes)):
        keep = np.arange(len(codes)) != i
        xk, wk = x[keep], w[keep]
        cov = np.linalg.inv(xk.T @ (xk * wk[:, None]) + prior)
        beta = cov @ (xk.T @ (wk * y[keep]))
        mean = (x[i] @ beta) * model.y_scale + model.y_mean
        sd = math.sqrt(model.tau2 + x[i] @ cov @ x[i]) * model.y_scale
        assert got_mean[i] == pytest.approx(mean, rel=1e-7, abs=1e-9)
        assert got_sd[i] == pytest.approx(sd, rel=1e-7)
    # Left out, the collapsed row is predicted from its neighbours: far above what it entered at.
    assert got_mean[3] > model.predict(codes[3:4])[0][0] > means[3]


def test_fit_with_several_fidelities_adds_one_offset_per_earlier_fidelity() -> None:
    rng = np.random.default_rng(2)
    n = 4
    codes = np.concatenate([np.arange(1, 16), np.arange(1, 16, 2)])  # odd masks under both
    fidelity = np.array([0] * 15 + [1] * 8)
    counts = np.ones(len(codes))
    means = value_features(codes, n) @ rng.normal(size=2 * n) * 0.02 - 0.05 * fidelity
    model = ValueModel.fit(n, codes, counts, means, np.zeros(len(codes)), fidelity)
    assert model is not None
    # The same weighted ridge, with a one-hot of the earlier fidelity at the bits' precision.
    y = (means - means.mean()) / means.std()
    x = np.concatenate([value_features(codes, n), fidelity[:, None].astype(float)], axis=1)
    w = 1.0 / (model.tau2 + model.sigma2 / counts)
    prior = np.diag([1e-4] + [1.0] * n + [4.0] * (n - 1) + [1.0])
    expected = np.linalg.solve(x.T @ (x * w[:, None]) + prior, x.T @ (w * y))
    np.testing.assert_allclose(model.beta, expected[:-1], rtol=1e-8, atol=1e-10)
    assert model.offsets[0] == 0.0
    assert model.offsets[1] == pytest.approx(expected[-1] * means.std())
    assert model.offsets[1] == pytest.approx(-0.05, abs=0.01)
    np.testing.assert_allclose(model.cov, np.linalg.inv(x.T @ (x * w[:, None]) + prior)[:-1, :-1])
    # Masks count once each: 2 distinct masks in 4 rows are too few.
    two = ValueModel.fit(n, np.array([1, 2, 1, 2]), np.ones(4), np.arange(4.0), np.zeros(4))
    assert two is None
    # One fidelity: no offsets, as without the argument.
    plain = ValueModel.fit(n, codes[:15], counts[:15], means[:15], np.zeros(15))
    same = ValueModel.fit(n, codes[:15], counts[:15], means[:15], np.zeros(15), fidelity[:15])
    assert plain is not None and same is not None
    np.testing.assert_array_equal(plain.beta, same.beta)
    assert same.offsets.tolist() == [0.0]


def test_model_data_and_estimates_with_several_fidelities() -> None:
    evidence = Evidence()
    evidence.add(3, 7, 0, 0, feasible=True, value=0.80, fidelity="short")
    evidence.add(3, 7, 1, 1, feasible=True, value=0.82, fidelity="short")
    evidence.add(3, 3, 2, 2, feasible=True, value=0.70, fidelity="short")
    evidence.add(3, 1, 3, 3, feasible=False, value=0.40, fidelity="short")  # never feasible
    evidence.add(3, 7, 4, 4, feasible=True, value=0.86, fidelity="long")
    evidence.add(3, 6, 5, 5, feasible=True, value=0.84, fidelity="long")
    evidence.add(3, 2, 6, 6, feasible=False, value=0.50, fidelity="long")  # never feasible
    evidence.add(3, 5, 8, 8, feasible=True, value=0.90)  # names no fidelity: the reference's
    evidence.add(3, 5, 7, 7, feasible=True, value=0.88, fidelity="long")  # finished later
    assert evidence.fidelities(3) == ["long", "short"]  # the newest first
    record = evidence.records(3)[7]
    assert record.count == 3 and record.mean == pytest.approx((0.80 + 0.82 + 0.86) / 3)
    assert record.groups["short"] == pytest.approx([2, 0.81, 0.0002])
    assert record.shifted_mean({"short": -0.05, "long": 0.0}) == pytest.approx(0.86)
    assert record.shares(["short"]).tolist() == pytest.approx([2 / 3])
    assert evidence.records(3)[5].last_fidelity is None  # trial 8, though folded first
    codes, counts, means, ssd, fidelity = evidence.model_data(3)
    rows = sorted(zip(codes.tolist(), fidelity.tolist(), counts.tolist(), means, ssd))
    # A row per mask and fidelity (unnamed values merged into the reference's); a censored mask
    # once, under its latest value's fidelity, at that fidelity's lowest feasible mean.
    expected = [
        (1, 1, 1, 0.70, 0.0),
        (2, 0, 1, 0.84, 0.0),
        (3, 1, 1, 0.70, 0.0),
        (5, 0, 2, 0.89, 0.0002),
        (6, 0, 1, 0.84, 0.0),
        (7, 0, 1, 0.86, 0.0),
        (7, 1, 2, 0.81, 0.0002),
    ]
    assert [r[:3] for r in rows] == [e[:3] for e in expected]
    np.testing.assert_allclose([r[3:] for r in rows], [e[3:] for e in expected], atol=1e-12)
    # The estimates take each value's offset off, and carry the offset's uncertainty.
    estimates = estimate(evidence, 3)
    model = estimates.model
    assert model is not None and len(model.offsets) == 2 and model.offsets_cov is not None
    by_code = {r.code: i for i, r in enumerate(estimates.records)}
    offsets = {"long": 0.0, "short": float(model.offsets[1])}
    plain = model.posterior(np.array([3]), np.array([1.0]), np.array([0.70 - offsets["short"]]))
    assert estimates.means[by_code[3]] == pytest.approx(plain[0][0])
    assert estimates.sds[by_code[3]] > plain[1][0]  # measured only under the old settings
    # Only censored values under the newest fidelity: the reference is the latest feasible one.
    evidence.add(3, 4, 9, 9, feasible=False, value=0.30, fidelity="longer")
    assert evidence.fidelities(3) == ["long", "short", "longer"]
    # A later feasible evaluation under the old settings makes them the reference.
    evidence.add(3, 3, 10, 10, feasible=True, value=0.71, fidelity="short")
    assert evidence.fidelities(3) == ["short", "long", "longer"]


def test_paired_offsets_without_a_model_come_from_masks_measured_under_several_fidelities() -> None:
    """Mask effects plus fidelity offsets, least squares weighted by the counts: by hand."""
    evidence = Evidence()
    # Two fidelities, two masks under both: the difference new - old is 0.10 for mask 7 (one
    # value each) and 0.15 for mask 3 (two each); weights k_old k_new / (k_old + k_new) = 1/2
    # and 1, so the offset is (0.5 * 0.10 + 1 * 0.15) / 1.5.
    evidence.add(3, 7, 0, 0, feasible=True, value=0.80, fidelity="new")
    for k, value in enumerate((0.74, 0.76)):
        evidence.add(3, 3, 1 + k, 1 + k, feasible=True, value=value, fidelity="new")
    evidence.add(3, 5, 3, 3, feasible=True, value=0.90, fidelity="new")  # one fidelity only
    evidence.add(3, 7, 4, 4, feasible=True, value=0.70, fidelity="old")
    for k, value in enumerate((0.59, 0.61)):
        evidence.add(3, 3, 5 + k, 5 + k, feasible=True, value=value, fidelity="old")
    evidence.add(3, 1, 7, 7, feasible=True, value=0.50, fidelity="old")
    assert evidence.fidelities(3) == ["old", "new"]  # the latest feasible value's
    offsets = evidence.paired_offsets(3)
    assert offsets == {"new": pytest.approx((0.5 * 0.10 + 0.15) / 1.5)}
    # Each mask's own mean, its new values shifted onto the old scale.
    plain = estimate(evidence, 3, pooled=False)
    means = {r.code: m for r, m in zip(plain.records, plain.means)}
    gamma = offsets["new"]
    assert means[5] == pytest.approx(0.90 - gamma)
    assert means[7] == pytest.approx((0.70 + 0.80 - gamma) / 2)
    assert means[1] == pytest.approx(0.50)

    # A chain: a -> b through mask 1, b -> c (the reference) through mask 2; exact fit. A
    # fidelity that shares no mask with them ("z") gets no offset.
    chain = Evidence()
    values = [(1, "a", 0.60), (1, "a", 0.60), (1, "b", 0.70), (2, "b", 0.72), (4, "z", 0.40)]
    values += [(4, "z", 0.42), (6, "z", 0.30), (2, "c", 0.80)]
    for k, (code, name, value) in enumerate(values):
        chain.add(3, code, k, k, feasible=True, value=value, fidelity=name)
    assert chain.fidelities(3)[0] == "c"
    offsets = chain.paired_offsets(3)
    assert set(offsets) == {"a", "b"}
    assert offsets["b"] == pytest.approx(-0.08)
    assert offsets["a"] == pytest.approx(-0.18)
    # One fidelity, or none linked to the reference: nothing to shift.
    single = Evidence()
    single.add(3, 1, 0, 0, feasible=True, value=0.5, fidelity="a")
    single.add(3, 1, 1, 1, feasible=True, value=0.6)
    assert single.paired_offsets(3) == {}


def test_one_named_fidelity_or_unnamed_trials_beside_it_change_nothing() -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(1, 64, 40)
    values = rng.normal(0.8, 0.02, 40)

    def estimates(names: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        evidence = Evidence()
        for k, (code, value, name) in enumerate(zip(codes, values, names)):
            evidence.add(6, int(code), k, k, feasible=True, value=float(value), fidelity=name)
        result = estimate(evidence, 6)
        return result.means, result.sds

    unnamed = estimates([None] * 40)
    for names in (["a"] * 40, [None] * 10 + ["a"] * 30, ["a"] * 30 + [None] * 10):
        np.testing.assert_array_equal(estimates(names)[0], unnamed[0])
        np.testing.assert_array_equal(estimates(names)[1], unnamed[1])


def test_fit_needs_three_masks_and_repeats_that_agree_mean_little_noise() -> None:
    assert ValueModel.fit(3, np.array([1, 2]), np.ones(2), np.zeros(2), np.zeros(2)) is None
    # Three masks with one mean (one feasible, two never feasible entered at its mean, say):
    # nothing sets the scale of the values, so no model.
    same = np.full(3, 0.63)
    assert ValueModel.fit(3, np.array([7, 1, 2]), np.ones(3), same, np.zeros(3)) is None
    assert ValueModel.fit(3, np.array([7, 1, 2]), np.ones(3), same + [0, 0, 0.01], np.zeros(3))
    codes = np.arange(1, 16)
    means = value_features(codes, 4) @ np.linspace(-1, 1, 8)
    few = ValueModel.fit(4, codes, np.ones(15), means, np.zeros(15))
    many = ValueModel.fit(4, codes, np.full(15, 5.0), means, np.zeros(15))
    assert few is not None and many is not None
    assert many.sigma2 < few.sigma2 / 10  # 60 repeats that agree exactly
    _, sd_few = few.posterior(codes, np.ones(15), means)
    _, sd_many = many.posterior(codes, np.full(15, 5.0), means)
    assert sd_many.max() < sd_few.min()


def test_feasibility_model_learns_that_deep_masks_are_pruned() -> None:
    rng = np.random.default_rng(1)
    model = FeasibilityModel(8)
    assert model.p_feasible(np.array([255])).tolist() == [1.0]  # nothing infeasible seen yet
    for m in rng.permutation(np.arange(1, 256))[:80]:
        model.add(int(m), bin(int(m)).count("1") < 6)
    deep = np.array([0b01111111, 0b11111101, 0b11101111], dtype=np.int64)
    shallow = np.array([0b00001111, 0b01010101, 0b11100001], dtype=np.int64)
    # Few depth-7 masks are among the 80 (8 exist), so the prior keeps some doubt.
    assert model.p_feasible(deep).max() < 0.3
    assert model.p_feasible(shallow).min() > 0.9


def test_feasibility_model_learns_that_dropping_either_top_layer_collapses() -> None:
    """An AND of bits (feasible only with layers 6 and 7), as when dropping any top layer
    collapses the model: the log-odds are linear in it, so a mask lacking either is unlikely."""
    rng = np.random.default_rng(0)
    model = FeasibilityModel(8)
    for m in rng.permutation(np.arange(1, 256))[:60]:
        model.add(int(m), (int(m) >> 6) & 3 == 3)
    low = np.arange(1, 64)  # every choice of the lower six layers
    both = model.p_feasible(low | 0b11000000)
    six, seven = model.p_feasible(low | 0b01000000), model.p_feasible(low | 0b10000000)
    assert both.mean() > 0.75
    assert max(six.mean(), seven.mean()) < 0.15
    assert np.all(both > np.maximum(six, seven))


def test_feasibility_refitted_after_every_evaluation_gives_the_single_fit() -> None:
    """Refits as evaluations arrive (as the sampler asks between trials) end where one fit on all
    of them does, even after a run of infeasible evaluations saturates the probabilities."""
    rng = np.random.default_rng(0)
    codes = [int(c) for c in rng.integers(1, 256, size=30)]
    feasible = [False] * 10 + [bool((c >> 7) & 1) for c in codes[10:]]
    stepwise, once = FeasibilityModel(8), FeasibilityModel(8)
    for code, ok in zip(codes, feasible, strict=True):
        stepwise.add(code, ok)
        once.add(code, ok)
        stepwise.p_feasible(np.array([code]))
    every = np.arange(1, 256)
    np.testing.assert_allclose(stepwise.p_feasible(every), once.p_feasible(every), atol=1e-6)
    assert once.p_feasible(np.array([0b10000001]))[0] > 0.5  # layer 7 kept: mostly feasible


def test_p_left_out_is_one_newton_step_towards_the_fit_without_the_mask() -> None:
    """Against the step computed from scratch (the gradient and Hessian of the log posterior
    without the mask's rows, at the fit with them), and within 0.06 of refits without it."""
    rng = np.random.default_rng(3)
    n = 8
    model = FeasibilityModel(n)
    for code in rng.integers(1, 256, size=70):
        keeps_top = (int(code) >> 7) & 1
        model.add(int(code), bool(keeps_top or rng.random() < 0.3) and rng.random() > 0.1)
    model.add(0b10110110, False)  # keeps the top layer: a failure the others do not predict
    model.add(0b10110110, False)
    failed = [c for c, (s, t) in model._counts.items() if s < t]
    left_out = model.p_left_out(failed)
    fitted = model.p_feasible(np.array(failed))
    codes = np.array(list(model._counts), dtype=np.int64)
    counts = np.array(list(model._counts.values()), dtype=float)
    x_all = feasibility_features(codes, n)
    w = model._coef
    precision = 1.0 / FEASIBILITY_PRIOR_SD**2
    for i, code in enumerate(failed):
        keep = codes != code
        x, s, t = x_all[keep], counts[keep, 0], counts[keep, 1]
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (s - t * p) - precision * w
        hessian = x.T @ (x * (t * p * (1 - p))[:, None]) + precision * np.eye(len(w))
        step = w + np.linalg.solve(hessian, gradient)
        x_own = feasibility_features(np.array([code]), n)[0]
        assert left_out[i] == pytest.approx(1.0 / (1.0 + np.exp(-(x_own @ step))), abs=1e-9)
        refit = logistic_map(x, s, t, precision)
        assert left_out[i] == pytest.approx(1.0 / (1.0 + np.exp(-(x_own @ refit))), abs=0.06)
        if counts[~keep, 0].sum() == 0:  # never feasible: without its failures it looks better
            assert left_out[i] > fitted[i]
    # The twice-failed mask among feasible top-layer masks: the others say it trains; a failed
    # mask without the top layer is as the others without it.
    own = failed.index(0b10110110)
    assert left_out[own] > fitted[own] + 0.1 and left_out[own] > 0.8
    no_top = [i for i, c in enumerate(failed) if not c >> 7 and model._counts[c][0] == 0]
    assert len(no_top) > 10 and np.mean(left_out[no_top]) < 0.5  # truth: 0.27


def test_lapses_are_collapses_of_masks_the_others_say_train() -> None:
    """Masks without the top layer collapse (structural); the full mask, which keeps it, collapsed
    once (a failed fine-tune). Only the latter is a lapse, left out of the value model and so of
    the sampler's and the answer's estimates; both kinds count against feasibility. The full
    mask is the only one of its depth, so its own failure sets its depth's coefficient: fitted
    with it, it looks infeasible; only the fit without it tells a lapse."""
    rng = np.random.default_rng(4)
    n = 6
    digest = StudyDigest()
    digest.feasibility[n] = FeasibilityModel(n)

    def add(code: int, number: int, value: float, feasible: bool) -> None:
        digest.evidence.add(n, code, number, number, feasible=feasible, value=value)
        digest.feasibility[n].add(code, feasible)

    number = 0
    for code in range(1, 63):
        if code >> 5:  # the top layer kept: trains; some repeats, which differ (a noise scale)
            for _ in range(1 if code % 4 else 2):
                add(code, number, 0.8 + 0.01 * bin(code).count("1") + rng.normal(0, 0.01), True)
                number += 1
        elif code % 2 == 0:
            add(code, number, 0.5, False)
            number += 1
    add(0b111111, number, 0.5, False)
    collapsed = sorted(digest.evidence.collapsed_once(n))
    assert len(collapsed) == 16 and 0b111111 in collapsed
    model = digest.feasibility[n]
    fitted, left_out = model.p_feasible(np.array(collapsed)), model.p_left_out(collapsed)
    full = collapsed.index(0b111111)
    assert fitted[full] < 0.5 < left_out[full]
    assert np.delete(left_out, full).max() < 0.25  # the structural collapses
    assert digest.lapses(n) == {0b111111}
    pooled = digest.estimate(n)
    by_hand = estimate(digest.evidence, n, leave_out={0b111111})
    np.testing.assert_allclose(pooled.means, by_hand.means)
    assert not np.allclose(pooled.means, estimate(digest.evidence, n).means)
    assert digest.estimate(n, pooled=False).model is None


def test_p_left_out_refits_a_fit_that_has_not_seen_the_mask() -> None:
    """In a large study p_feasible refits only after every 1% more evaluations; a mask evaluated
    since was never in that fit, and taking it out again would overstate its chance."""
    rng = np.random.default_rng(5)
    n = 10
    lagging, fresh = FeasibilityModel(n), FeasibilityModel(n)
    for code in rng.integers(1, 1024, size=300):
        ok = bool((int(code) >> 9) & 1) and rng.random() > 0.1
        lagging.add(int(code), ok)
        fresh.add(int(code), ok)
    lagging.p_feasible(np.array([1]))  # fitted on 300
    new = next(c for c in range(512, 1024) if c not in lagging._counts)
    lagging.add(new, False)
    fresh.add(new, False)
    assert lagging.p_left_out([new])[0] == pytest.approx(fresh.p_left_out([new])[0], abs=1e-9)


def test_logistic_map_by_hand() -> None:
    # One constant feature, 3 successes in 4, no prior: the MLE log-odds log(3).
    w = logistic_map(np.ones((1, 1)), np.array([3.0]), np.array([4.0]), 0.0)
    assert w[0] == pytest.approx(math.log(3.0))
    # With a prior the MAP solves x'(s - n p) = precision * w.
    x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    s, n = np.array([2.0, 0.0, 5.0]), np.array([3.0, 4.0, 6.0])
    w = logistic_map(x, s, n, 0.5)
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    np.testing.assert_allclose(x.T @ (s - n * p), 0.5 * w, atol=1e-9)


def test_estimates_pool_a_lucky_single_draw_but_keep_well_measured_means() -> None:
    rng = np.random.default_rng(2)
    n = 6
    weights = rng.normal(size=n)
    evidence = Evidence()
    number = 0
    for code in range(1, 2**n):
        truth = float(((code >> np.arange(n)) & 1) @ weights)
        repeats = 4 if code % 3 == 0 else 1
        for _ in range(repeats):
            evidence.add(n, code, number, number, feasible=True, value=truth + rng.normal(0, 0.3))
            number += 1
    lucky = 0b000001
    truth_lucky = float(weights[0])
    evidence.add(n, 0b000001, number, number, feasible=True, value=truth_lucky + 1.5)
    est = estimate(evidence, n)
    by_code = {r.code: i for i, r in enumerate(est.records)}
    record = est.records[by_code[lucky]]
    assert record.count == 2
    # Pulled from its own mean (truth + 0.75 + noise) towards the truth.
    assert abs(est.means[by_code[lucky]] - truth_lucky) < abs(record.mean - truth_lucky)
    plain = estimate(evidence, n, pooled=False)
    assert plain.model is None and np.all(plain.sds == 0)
    np.testing.assert_allclose(plain.means, [r.mean for r in plain.records])


def test_evidence_keeps_welford_moments_and_eligibility() -> None:
    evidence = Evidence()
    for i, v in enumerate((1.0, 2.0, 4.0)):
        evidence.add(3, 5, i, i, feasible=True, value=v)
    evidence.add(3, 5, 3, 3, feasible=False, value=None)
    (record,) = evidence.records(3).values()
    assert record.count == 3 and record.mean == pytest.approx(7 / 3)
    assert record.ssd == pytest.approx(sum((v - 7 / 3) ** 2 for v in (1.0, 2.0, 4.0)))
    assert record.n_evaluations == 4 and record.eligible
    evidence.add(3, 6, 4, 4, feasible=True, value=1.0)
    evidence.add(3, 6, 5, 5, feasible=False, value=0.2)
    evidence.add(3, 6, 6, 6, feasible=False, value=0.3)
    assert not evidence.records(3)[6].eligible  # feasible less often than not


def test_once_failed_masks_are_those_evaluated_once_and_infeasible_with_a_value() -> None:
    evidence = Evidence()
    evidence.add(3, 1, 0, 0, feasible=False, value=0.5)
    evidence.add(3, 2, 1, 1, feasible=False, value=None)  # stopped before measuring anything
    evidence.add(3, 3, 2, 2, feasible=True, value=0.9)
    evidence.add(3, 4, 3, 3, feasible=False, value=0.4)
    evidence.add(2, 1, 4, 4, feasible=False, value=0.5)
    assert evidence.once_failed(3) == {1, 4}
    assert evidence.once_failed(2) == {1}
    assert evidence.once_failed(4) == set()
    evidence.add(3, 1, 5, 5, feasible=True, value=0.8)  # retried: trained this time
    evidence.add(3, 4, 6, 6, feasible=False, value=0.5)  # retried: failed again
    evidence.add(3, 3, 7, 7, feasible=False, value=0.5)  # a feasible mask's failed run
    assert evidence.once_failed(3) == set()


def test_collapsed_once_are_the_once_failed_far_under_every_feasible_value() -> None:
    evidence = Evidence()
    evidence.add(3, 1, 0, 0, feasible=False, value=-1e6)
    assert evidence.collapsed_once(3) == set()  # nothing feasible: no scale
    for i, (code, v) in enumerate([(7, 0.9), (7, 0.8), (3, 0.7)], start=1):
        evidence.add(3, code, i, i, feasible=True, value=v)
    # The noise by hand: the repeats' ssd 0.005 on 1 dof, with the prior of a quarter of the
    # variance of the masks' means (0.85, 0.7) worth half a degree of freedom.
    spread = ((0.85 - 0.775) ** 2 + (0.7 - 0.775) ** 2) / 2
    sd = math.sqrt((0.5 * 0.25 * spread + 0.005) / 1.5)
    bar = 0.7 - t_quantile(4.0, 1.5) * sd
    evidence.add(3, 2, 4, 4, feasible=False, value=bar - 0.01)
    evidence.add(3, 4, 5, 5, feasible=False, value=bar + 0.01)
    evidence.add(3, 5, 6, 6, feasible=False, value=None)
    assert evidence.once_failed(3) == {1, 2, 4}
    assert bar < 0.0  # the t quantile on 1.5 degrees of freedom is wide
    assert evidence.collapsed_once(3) == {1, 2}
    # Repeats that never differed: a new seed would change nothing.
    tied = Evidence()
    for i, (code, v) in enumerate([(7, 0.9), (7, 0.9), (3, 0.7)]):
        tied.add(3, code, i, i, feasible=True, value=v)
    tied.add(3, 1, 3, 3, feasible=False, value=-1e6)
    assert tied.once_failed(3) == {1} and tied.collapsed_once(3) == set()


def test_the_noise_estimate_is_the_spread_within_a_fidelity() -> None:
    """A deterministic objective resumed under other settings (every value 0.05 higher): the
    offset between fidelities is not noise, so nothing sets a noise scale, no run is taken for
    a failed fine-tune, and no mask is retried; a real repeat that differs sets one. Unnamed
    values beside one named fidelity are that fidelity's, as everywhere else."""

    def resumed(first: str | None, bar_run: float) -> Evidence:
        evidence = Evidence()
        number = 0
        for fidelity, shift in ((first, 0.0), ("longer", 0.05)):
            for code in (7, 6, 5, 3):
                value = 0.8 + 0.01 * code + shift
                evidence.add(3, code, number, number, feasible=True, value=value, fidelity=fidelity)
                number += 1
        evidence.add(3, 1, number, number, feasible=False, value=bar_run, fidelity="longer")
        return evidence

    evidence = resumed("short", -100.0)
    assert evidence.noise_sd(3)[1] == pytest.approx(0.5)  # the prior's alone
    assert evidence.once_failed(3) == {1} and evidence.collapsed_once(3) == set()
    evidence.add(3, 7, 99, 99, feasible=True, value=0.88, fidelity="longer")
    assert evidence.noise_sd(3)[1] == pytest.approx(1.5)  # one repeat within "longer"
    assert evidence.collapsed_once(3) == {1}
    # Unnamed and "longer": one fidelity, so the two runs of each mask are repeats (4 dof), as
    # the value model takes them (one row per mask).
    unnamed = resumed(None, -100.0)
    assert unnamed.fidelities(3) == ["longer"]
    assert unnamed.noise_sd(3)[1] == pytest.approx(4.5)
    assert sum(unnamed.model_data(3)[1] > 1) == 4
    assert unnamed.collapsed_once(3) == {1}


def test_model_data_enters_never_feasible_masks_once_at_the_lowest_feasible_mean() -> None:
    evidence = Evidence()
    evidence.add(3, 1, 0, 0, feasible=False, value=0.5)  # nothing feasible yet: no data
    assert all(len(a) == 0 for a in evidence.model_data(3))
    evidence.add(3, 7, 1, 1, feasible=True, value=0.9)
    evidence.add(3, 7, 2, 2, feasible=True, value=0.8)
    evidence.add(3, 3, 3, 3, feasible=True, value=0.7)
    evidence.add(3, 3, 4, 4, feasible=False, value=0.6)  # feasible once: its own values count
    evidence.add(3, 1, 5, 5, feasible=False, value=0.4)  # never feasible, measured twice
    evidence.add(3, 4, 6, 6, feasible=False, value=0.75)  # never feasible, above the floor
    evidence.add(3, 2, 7, 7, feasible=False, value=None)  # never feasible, nothing measured
    codes, counts, means, ssd, fidelity = evidence.model_data(3)
    assert fidelity.tolist() == [0, 0, 0, 0]  # one fidelity (none named)
    rows = {int(c): (k, m, d) for c, k, m, d in zip(codes, counts, means, ssd)}
    assert set(rows) == {7, 3, 1, 4}
    assert rows[7] == pytest.approx((2, 0.85, 0.005))
    assert rows[3] == pytest.approx((2, 0.65, 0.005))
    # The lowest feasible mean is 0.65; a censored mask is one evaluation, with no spread.
    assert rows[1] == pytest.approx((1, 0.65, 0.0))
    assert rows[4] == pytest.approx((1, 0.75, 0.0))
    # Left out: a never-feasible mask's row goes; a feasible one's stays.
    kept = evidence.model_data(3, leave_out={1, 3})[0]
    assert sorted(int(c) for c in kept) == [3, 4, 7]


def test_t_quantile_against_the_tables() -> None:
    # Student-t 97.5% quantiles (z = 1.959964): 2.571 (5 dof), 2.228 (10), 2.042 (30).
    for dof, table in ((5, 2.571), (10, 2.228), (30, 2.042)):
        assert t_quantile(1.959964, dof) == pytest.approx(table, abs=0.002)
    # z = 4, 10 dof, term by term: 4 + 17 / 10 + 64.125 / 100 + 181.34375 / 1e3 + 377.7589 / 1e4.
    assert t_quantile(4.0, 10) == pytest.approx(6.5603696, abs=1e-6)
    assert t_quantile(4.0, 1e12) == pytest.approx(4.0)


def test_a_collapsed_run_of_a_mask_feasible_elsewhere_counts_against_it_only() -> None:
    """A pruned value far below the mask's feasible runs (a fine-tune that fell to the majority
    class on that seed) leaves its mean and spread alone; one just under them (a draw under the
    floor) counts; in whatever order the runs arrive."""
    # Noise: ssd 0.0008 (mask 5: 0.80, 0.84) + 0.0024 (mask 6: 0.70 four times, 0.72 and 0.68
    # three times each) on 1 + 9 dof, pooled with the prior, a quarter of the variance of the
    # feasible means (0.82 and 0.70: 0.0036) worth half a dof: 0.00365 / 10.5 on 10.5 dof. The
    # gap between one draw and the mean of mask 5's two has sd * sqrt(1.5).
    sd = math.sqrt(0.00365 / 10.5)
    limit = t_quantile(4.0, 10.5) * sd * math.sqrt(1.5)
    assert 0.12 < limit < 0.70  # so 0.70 (0.12 under 0.82) counts and 0.12 does not
    runs = [
        (5, True, 0.80),
        (5, True, 0.84),
        (5, False, 0.12),  # 0.70 under the feasible mean of 0.82: a collapse
        (5, False, 0.70),  # 0.12 under it: a draw under the floor
        *[(6, True, v) for v in (0.70, 0.72, 0.68) * 3 + (0.70,)],
    ]
    for order in (runs, runs[::-1], [runs[2], *runs[:2], *runs[3:]]):
        evidence = Evidence()
        for i, (code, feasible, value) in enumerate(order):
            evidence.add(3, code, i, i, feasible=feasible, value=value)
        record = evidence.records(3)[5]
        assert evidence.noise_sd(3) == (pytest.approx(sd), 10.5)
        kept = (0.80, 0.84, 0.70)
        assert record.count == 3 and record.mean == pytest.approx(sum(kept) / 3)
        assert record.ssd == pytest.approx(sum((v - sum(kept) / 3) ** 2 for v in kept))
        assert record.groups == {None: [3, pytest.approx(sum(kept) / 3), pytest.approx(record.ssd)]}
        assert (record.n_feasible, record.n_infeasible) == (2, 2) and record.eligible
    # Without repeats there is no noise estimate yet, and with few degrees of freedom the test
    # is lenient: every value counts, as measured.
    evidence = Evidence()
    evidence.add(3, 5, 0, 0, feasible=True, value=0.80)
    evidence.add(3, 5, 1, 1, feasible=False, value=0.12)
    assert evidence.noise_sd(3) == (math.inf, 0.0)
    assert evidence.records(3)[5].mean == pytest.approx(0.46)
    evidence.add(3, 6, 2, 2, feasible=True, value=0.70)
    evidence.add(3, 6, 3, 3, feasible=True, value=0.72)
    assert evidence.noise_sd(3)[1] == 1.5 and evidence.records(3)[5].count == 2
    # Nine more repeats of mask 6 (10 dof in all) and the collapse stops counting.
    for i, v in enumerate((0.70, 0.72, 0.68) * 3):
        evidence.add(3, 6, 4 + i, 4 + i, feasible=True, value=v)
    assert evidence.records(3)[5].count == 1 and evidence.records(3)[5].mean == 0.80
    # A mask never feasible keeps its values (censored evidence in the value model).
    evidence.add(3, 7, 20, 20, feasible=False, value=0.10)
    evidence.add(3, 7, 21, 21, feasible=False, value=0.20)
    assert evidence.records(3)[7].count == 2


# --------------------------------------------------------------------------------------------------
# Proposal functions


def test_flip_patterns_and_neighbourhood_by_hand() -> None:
    assert sorted(proposals.flip_patterns(3, 2).tolist()) == [1, 2, 3, 4, 5, 6]
    assert proposals.flip_patterns(40, 3) is None  # too many: sampled instead
    rng = np.random.RandomState(0)
    # Elites 0b0011 and 0b1100 of 4 layers, radius 1: their 8 one-flip neighbours, less the
    # taken 0b0111.
    candidates, parents = proposals.neighbourhood([3, 12], 4, 1, {7}, 100, rng)
    assert sorted(candidates.tolist()) == sorted({1, 2, 11, 4, 8, 13, 14})
    for c, p in zip(candidates, parents, strict=True):
        assert bin(int(c) ^ [3, 12][p]).count("1") == 1


def test_nearest_free_random_mask_and_flip_pattern() -> None:
    rng = np.random.RandomState(1)
    # 0b111 with every one-flip neighbour taken: the nearest free masks are two flips away.
    got = proposals.nearest_free(7, 3, {7, 6, 5, 3}, rng)
    assert got in (1, 2, 4)
    assert proposals.nearest_free(7, 3, set(range(1, 8)), rng) == 7  # nothing free
    probs = proposals.keep_probabilities(4, 0.5, 1.0)
    np.testing.assert_allclose(probs, [0.98, 0.5 + 1 / 6, 0.5 - 1 / 6, 0.02])
    for _ in range(20):
        code = proposals.random_mask(4, probs, {1}, rng)
        assert code not in (0, 1)
    flips = [bin(proposals.flip_pattern(10, 3.0, rng)).count("1") for _ in range(400)]
    assert min(flips) >= 1 and 2.7 < np.mean(flips) < 3.3


def test_design_takes_the_candidate_farthest_from_the_others() -> None:
    candidates = np.array([0b0001, 0b0111, 0b1110], dtype=np.int64)
    # Others {0b0011}: distances 1, 1, 3.
    assert proposals.farthest(candidates, [0b0011]) == 2
    assert proposals.farthest(candidates, []) == 0


def test_choose_reevaluation_only_among_plausible_best_masks() -> None:
    rng = np.random.RandomState(0)
    free = np.array([True, True, True])
    # A clear best: nothing to re-evaluate.
    assert (
        proposals.choose_reevaluation(
            np.array([1.0, 0.5, 0.4]), np.array([0.01, 0.01, 0.01]), free, rng
        )
        is None
    )
    # Two within two standard errors, the third far below: only the two are ever picked, the
    # better more often.
    means, sds = np.array([1.0, 0.98, 0.5]), np.array([0.02, 0.02, 0.02])
    picks = [proposals.choose_reevaluation(means, sds, free, rng) for _ in range(300)]
    assert set(picks) == {0, 1}
    assert picks.count(0) > picks.count(1)
    # A pick that is being evaluated elsewhere gives nothing.
    busy = np.array([False, False, True])
    assert proposals.choose_reevaluation(means, sds, busy, rng) is None


def test_leader_to_confirm_only_a_leader_measured_once_with_noise() -> None:
    free = np.array([True, True, True])
    means, sds = np.array([1.0, 0.5, 1.0]), np.array([0.01, 0.01, 0.01])
    # The leader (the first of the tied best) measured once is measured again, however clear
    # its lead; measured twice, it is left alone (unless more are asked for).
    assert proposals.leader_to_confirm(means, sds, np.array([1, 3, 1]), free) == 0
    assert proposals.leader_to_confirm(means, sds, np.array([2, 1, 1]), free) is None
    assert proposals.leader_to_confirm(means, sds, np.array([2, 1, 1]), free, confirm_below=3) == 0
    # Noise-free values (standard deviation 0) need no confirmation.
    assert proposals.leader_to_confirm(means, np.zeros(3), np.array([1, 1, 1]), free) is None
    # A leader being evaluated elsewhere is not confirmed (again) here.
    busy = np.array([False, True, True])
    assert proposals.leader_to_confirm(means, sds, np.array([1, 1, 1]), busy) is None
    assert proposals.leader_to_confirm(np.array([]), np.array([]), np.array([]), free) is None


def test_knowledge_gradient_against_hand_computed_values() -> None:
    # Means 1.0, 0.9, 0.5 with sd 0.1 and noise variance 0.01: one more evaluation moves a
    # posterior mean by a normal step of sd 0.01 / sqrt(0.02) = 0.0707107. The two leaders are
    # 0.1 apart: z = -0.1 / 0.0707107 = -1.414214, f(z) = z Phi(z) + phi(z) = -1.414214 *
    # 0.0786496 + 0.1467626 = 0.0355346, gain 0.0025127. The third, 0.5 behind, gains ~0.
    gain = proposals.knowledge_gradient(np.array([1.0, 0.9, 0.5]), np.full(3, 0.1), 0.01)
    assert gain[0] == pytest.approx(0.0025127, abs=1e-7)
    assert gain[1] == pytest.approx(0.0025127, abs=1e-7)
    assert 0.0 <= gain[2] < 1e-12
    # A mask known exactly gains nothing; a lone mask has no rival to overtake.
    assert proposals.knowledge_gradient(np.array([1.0, 0.9]), np.array([0.1, 0.0]), 0.01)[
        1
    ] == pytest.approx(0.0)
    assert proposals.knowledge_gradient(np.array([1.0]), np.array([0.1]), 0.01)[0] == 0.0
    assert len(proposals.knowledge_gradient(np.array([]), np.array([]), 0.01)) == 0
    # Without noise the step is the whole sd: z = -0.1 / 0.1 = -1, f = -0.1586553 + 0.2419707.
    gain = proposals.knowledge_gradient(np.array([1.0, 0.9]), np.full(2, 0.1), 0.0)
    assert gain[1] == pytest.approx(0.1 * 0.0833155, abs=1e-7)


def test_best_within_and_front_points_by_hand() -> None:
    # Masks of depths 2, 3, 3, 5, 2 with values 0.6, 0.55, 0.7, 0.65, 0.62.
    depths = np.array([2, 3, 3, 5, 2])
    means = np.array([0.6, 0.55, 0.7, 0.65, 0.62])
    best = proposals.best_within(depths, means, 6)
    np.testing.assert_array_equal(best, [-np.inf, -np.inf, 0.62, 0.7, 0.7, 0.7, 0.7])
    # Depth 2's best is mask 4, depth 3's mask 2; depth 5's (0.65) does not beat 0.7.
    assert proposals.front_points(depths, means) == [4, 2]
    assert proposals.front_points(np.array([], dtype=int), np.array([])) == []


def test_front_knowledge_gradient_against_hand_computed_values() -> None:
    # Budgets of 0..3 layers whose best estimates are 0.5, 0.6, 0.7, 0.8. A mask of 2 layers
    # predicted 0.75 +- 0.1 without noise (step 0.1) lifts budget 2 by 0.1 * f(0.5) and budget 3
    # by 0.1 * f(-0.5): f(0.5) = 0.5 * 0.6914625 + 0.3520653 = 0.6977966, f(-0.5) = 0.1977966;
    # 0.0895593 in all, half of it at P(feasible) 0.5. The same prediction with 3 layers meets
    # budget 3 only. Without uncertainty a mask lifts each budget it meets by its lead.
    best = np.array([0.5, 0.6, 0.7, 0.8])
    gain = proposals.front_knowledge_gradient(
        np.array([0.75, 0.75, 0.75, 0.75]),
        np.array([0.1, 0.1, 0.1, 0.0]),
        np.array([1.0, 0.5, 1.0, 1.0]),
        np.array([2, 2, 3, 1]),
        best,
        0.0,
    )
    assert gain == pytest.approx([0.0895593, 0.0447797, 0.0197797, 0.15 + 0.05], abs=1e-6)
    # One budget and no size: the knowledge gradient of a new mask.
    one = proposals.front_knowledge_gradient(
        np.array([1.0]), np.array([0.1]), np.array([1.0]), np.array([0]), np.array([0.95]), 0.01
    )
    assert one == pytest.approx([0.0599821], abs=1e-6)


def test_knowledge_gradient_of_new_masks_against_hand_computed_values() -> None:
    # Predicted 1.0 ± 0.1 against a best estimate of 0.95, noise variance 0.01: step 0.0707107,
    # z = 0.05 / 0.0707107 = 0.7071068, f = 0.7071068 * 0.7602499 + 0.3106966 = 0.8482761,
    # gain 0.0599821; half of it at P(feasible) = 0.5. A prediction without uncertainty
    # below the best lifts nothing; one above it lifts by its lead.
    gain = proposals.knowledge_gradient_new(
        np.array([1.0, 1.0, 0.9, 1.0]),
        np.array([0.1, 0.1, 0.0, 0.0]),
        np.array([1.0, 0.5, 1.0, 1.0]),
        0.95,
        0.01,
    )
    assert gain == pytest.approx([0.0599821, 0.0299910, 0.0, 0.05], abs=1e-6)


# --------------------------------------------------------------------------------------------------
# The elite rule


def test_elites_single_objective_by_loss_ties_to_the_first() -> None:
    loss = np.array([[0.3], [0.1], [0.2], [0.1]])
    assert select_elites(loss, 2) == [1, 3]
    assert select_elites(loss, 10) == [0, 1, 2, 3]


def test_non_domination_rank_and_crowding_by_hand() -> None:
    loss = np.array([[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [3.0, 3.0], [5.0, 5.0]])
    assert non_domination_rank(loss).tolist() == [0, 0, 0, 1, 2]
    distance = crowding_distance(loss[:3])
    # Extremes infinite; the middle one: (4 - 1) / 3 + (4 - 1) / 3 = 2.
    assert math.isinf(distance[0]) and math.isinf(distance[2])
    assert distance[1] == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------------
# The storage digest


DIST = {f"layer_{i:02d}": CategoricalDistribution((0, 1)) for i in range(3)}


def _trial(mask: str, state: TrialState, value: float | None = None, **attrs: object) -> object:
    return create_trial(
        state=state,
        value=value,
        params={f"layer_{i:02d}": int(c) for i, c in enumerate(mask)},
        distributions=DIST,
        user_attrs=dict(attrs),
        system_attrs={PROPOSAL_KEY: {"mask": mask, "origin": "random", "generation": 0}},
    )


def test_observation_reads_what_a_pruned_trial_measured() -> None:
    done = _trial("110", TrialState.COMPLETE, 0.8)
    assert observation(done, MAX) == (True, 0.8, ())
    assert observation(done, [StudyDirection.MINIMIZE]) == (True, -0.8, ())
    low = _trial("100", TrialState.PRUNED, quality=0.6, accuracy=0.7)
    assert observation(low, MAX) == (False, 0.6, ())
    two = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert observation(low, two) == (False, 0.7, ())
    early = _trial("100", TrialState.PRUNED, quality=0.6, pruned_at_step=10)
    assert observation(early, MAX) == (False, None, ())  # another fidelity
    assert observation(_trial("100", TrialState.PRUNED), MAX) == (False, None, ())


def test_snapshot_folds_finished_trials_once_and_collects_pending_masks() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial("110", TrialState.COMPLETE, 0.8))
    study.add_trial(_trial("110", TrialState.COMPLETE, 0.6))
    study.add_trial(_trial("011", TrialState.PRUNED, quality=0.1))
    running = study.ask()
    study._storage.set_trial_system_attr(
        running._trial_id, PROPOSAL_KEY, {"mask": "101", "origin": "child", "generation": 0}
    )
    digest = StudyDigest()
    keys = {
        "prefix": "layer_",
        "proposal_key": PROPOSAL_KEY,
        "generation_key": "AlphaNASSampler:generation",
        "directions": MAX,
        "n_layers": None,
    }
    snap = take_snapshot(digest, study.get_trials(deepcopy=False), None, **keys)
    assert snap.pending == {mask_to_code((1, 0, 1))}
    assert snap.n_layers == 3 and snap.others_pending and snap.n_pending == 1
    assert snap.n_pending_first_generation == 1 and snap.n_pending_reevaluations == 0
    assert digest.evaluated == {mask_to_code((1, 1, 0)), mask_to_code((0, 1, 1))}
    assert digest.scan_from == 3 and digest.n_evaluated == 3
    record = digest.evidence.records(3)[mask_to_code((1, 1, 0))]
    assert record.count == 2 and record.mean == pytest.approx(0.7)
    assert digest.generation_counts == {0: 3}
    # A second snapshot folds nothing twice.
    take_snapshot(digest, study.get_trials(deepcopy=False), None, **keys)
    assert digest.n_evaluated == 3
    # claimed_elsewhere: the running trial holds 101, nobody holds 111.
    trials = study.get_trials(deepcopy=False)
    kw = {"prefix": "layer_", "proposal_key": PROPOSAL_KEY}
    assert claimed_elsewhere(trials, -1, mask_to_code((1, 0, 1)), digest, **kw)
    assert not claimed_elsewhere(trials, running._trial_id, mask_to_code((1, 0, 1)), digest, **kw)
    assert not claimed_elsewhere(trials, -1, mask_to_code((1, 1, 1)), digest, **kw)


def test_a_reused_result_is_not_a_second_evaluation() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial("110", TrialState.COMPLETE, 0.8))
    study.add_trial(_trial("110", TrialState.COMPLETE, 0.8, reused_from=0))
    study.add_trial(_trial("110", TrialState.COMPLETE, 0.7))
    digest = StudyDigest()
    take_snapshot(
        digest,
        study.get_trials(deepcopy=False),
        None,
        prefix="layer_",
        proposal_key=PROPOSAL_KEY,
        generation_key="AlphaNASSampler:generation",
        directions=MAX,
        n_layers=None,
    )
    record = digest.evidence.records(3)[mask_to_code((1, 1, 0))]
    assert record.count == 2 and record.numbers == [0, 2]
    assert record.mean == pytest.approx(0.75)
    assert digest.n_evaluated == 3  # it still fills its generation
