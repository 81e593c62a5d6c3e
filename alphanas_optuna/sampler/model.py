"""The sampler's model of evaluated masks: how good each one is, and whether it is feasible.

Everything here is NumPy on integer mask codes (bit ``i`` = layer ``i``; see
:func:`alphanas_optuna.mask.mask_to_code`), with no Optuna in sight, so it can be tested against
values computed by hand.

**Value** (:class:`ValueModel`). One brief fine-tune is a noisy measurement: the same mask trained
with another seed moves by about as much as good masks differ. The value of mask ``m`` is modelled
as a linear function of its bits and of the products of neighbouring bits, plus a mask-specific
deviation the linear part cannot explain, and every evaluation adds noise::

    y_mj = x_m . beta + delta_m + eps_mj,   delta_m ~ N(0, tau2),   eps_mj ~ N(0, sigma2)

``beta`` has a ridge prior, four times as tight on the pair terms as on the bits (effect hierarchy:
interactions are usually smaller than main effects, and with a few dozen noisy evaluations a loose
prior lets the ``n - 1`` pair terms chase noise). ``sigma2`` (noise) comes from the spread of
repeated evaluations of the same mask, with a weak prior for when there are none yet; ``tau2``
(what the linear part misses) is matched to the residuals (method of moments). Given both, the
posterior mean of a mask's value is the best linear unbiased prediction: its own mean ``ybar_m`` of
``k_m`` evaluations, pulled towards the linear prediction by the factor ``1 - rho_m`` with
``rho_m = tau2 / (tau2 + sigma2 / k_m)``. A mask measured once on a noisy task therefore borrows
strength from similar masks; a mask measured many times, or a landscape the linear part does not
fit (large ``tau2``), keeps its own mean; and noise-free evaluations (``sigma2`` near 0) are taken
as they are.

The data are each mask's evaluations with a value, but for failed fine-tunes (a pruned run far
below the mask's feasible ones; see :meth:`alphanas_optuna.sampler.evidence.Evidence.records`);
a mask never feasible enters once at the lowest mean of the feasible ones, or its own if higher
(censored evidence; see :meth:`alphanas_optuna.sampler.evidence.Evidence.model_data`).

**Fidelities.** Evaluations made under other settings (a study resumed with more training
steps) measure every mask higher or lower. With rows from several fidelities, each fidelity but
the reference (index 0) gets an offset ``gamma_f``, a coefficient with the bits' prior, fitted
with ``beta``: ``y_mfj = x_m . beta + gamma_f + delta_m + eps_mfj``. Predictions and posteriors
are on the reference's scale (the caller takes each value's offset off first), and a mask's
posterior carries the uncertainty of the offsets its values were shifted by. An offset is a
shift common to every mask; settings that reorder masks are beyond it. (A mask measured under
two fidelities counts as two rows with their own ``delta``: an approximation, of little weight
where most masks have one row.)

**Feasibility** (:class:`FeasibilityModel`). A Bayesian logistic regression of "this evaluation
was feasible" on the bits and a one-hot of the number of kept layers (pruning follows mostly
from depth, or from dropping a layer the model cannot do without), fitted to each distinct
mask's counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FeasibilityModel",
    "ValueModel",
    "logistic_map",
    "logistic_precision",
    "feasibility_features",
    "noise_variance",
    "refit_due",
    "value_features",
]

# The value model is fitted once this many distinct masks have a value (and their means differ).
MIN_MASKS = 3
# Prior of the noise variance, in units of the variance of the masks' means, worth this many
# degrees of freedom: a guess that a few repeated evaluations overrule.
NOISE_PRIOR_VARIANCE = 0.25
NOISE_PRIOR_DOF = 0.5
# An objective whose repeated evaluations reproduced their mask's value exactly this many times
# (and never differed) is taken as deterministic: noise 0, so nothing more is repeated. One that
# ignores the seed should not have its evaluations averaged or repeated. A brief fine-tune with
# a new seed ties by chance only when its accuracy ties to the example: about 1 repeat in 10 on
# a 300-example validation split with 1 point of noise, 1 in 100 on 2,500 examples with 2, so
# three ties in a row (1 in 1,000 at worst) are asked for, not two (1 in 100). 0 turns it off.
DETERMINISTIC_REPEATS = 3
# Smallest tau2 (standardised): the linear part is never trusted completely.
MIN_TAU2 = 0.05
# Prior standard deviation of the feasibility model's coefficients (log-odds): weakly informative,
# the scale Gelman et al. (2008) recommend for logistic regression on binary inputs.
FEASIBILITY_PRIOR_SD = 2.5
_FEASIBILITY_PRIOR_PRECISION = 1.0 / FEASIBILITY_PRIOR_SD**2
# Up to this many evaluations the models are refitted after every one (see :func:`refit_due`).
REFIT_EVERY_UP_TO = 200
# Ridge prior precision of the coefficients (standardised values); the intercept is nearly free.
PRIOR_PRECISION = 1.0
# ... and of the neighbouring-pair coefficients: interactions are shrunk harder than main effects.
# Over 2,540 development studies (sigma = 0.02) this lowered the named mask's regret after 50
# trials by 3.3% +- 1.7% (precision 16: 4.7% +- 1.8%; none: 1.7% +- 1.8%; BENCHMARKS.md).
PAIR_PRIOR_PRECISION = 4.0
INTERCEPT_PRECISION = 1e-4


def value_features(codes: np.ndarray, n: int) -> np.ndarray:
    """Rows ``[1, bit_0 .. bit_{n-1}, bit_0 bit_1 .. bit_{n-2} bit_{n-1}]`` of mask codes."""
    codes = np.asarray(codes, dtype=np.int64)
    bits = ((codes[:, None] >> np.arange(n)) & 1).astype(float)
    parts = [np.ones((len(codes), 1)), bits]
    if n > 1:
        parts.append(bits[:, :-1] * bits[:, 1:])
    return np.concatenate(parts, axis=1)


def feasibility_features(codes: np.ndarray, n: int) -> np.ndarray:
    """Rows ``[bits, one-hot of the number of kept layers (0 .. n)]`` of mask codes."""
    codes = np.asarray(codes, dtype=np.int64)
    bits = ((codes[:, None] >> np.arange(n)) & 1).astype(float)
    depth = bits.sum(axis=1).astype(int)
    onehot = np.zeros((len(codes), n + 1))
    onehot[np.arange(len(codes)), depth] = 1.0
    return np.concatenate([bits, onehot], axis=1)


def refit_due(fitted_at: int, now: int) -> bool:
    """Whether a model fitted on ``fitted_at`` evaluations should be refitted on ``now``: after
    every new one while the study is small, after every 1% more once it holds more than
    :data:`REFIT_EVERY_UP_TO` (one evaluation more changes little in a large study, and a refit
    costs time proportional to the number of masks)."""
    grown = now - fitted_at
    return grown > 0 and (fitted_at < REFIT_EVERY_UP_TO or grown >= fitted_at // 100)


def noise_variance(
    counts: np.ndarray,
    ssd: np.ndarray,
    prior_variance: float,
    prior_dof: float,
) -> float:
    """Pooled within-mask variance with a conjugate prior (:func:`pooled_variance` of the summed
    ``ssd`` and ``sum(counts - 1)`` degrees of freedom), where ``ssd`` is each mask's sum of
    squared deviations of its evaluations from their mean; 0 when at least
    :data:`DETERMINISTIC_REPEATS` repeats all reproduced their mask's value exactly.
    """
    counts = np.asarray(counts, dtype=float)
    dof = float(np.sum(np.maximum(counts - 1.0, 0.0)))
    if DETERMINISTIC_REPEATS and dof >= DETERMINISTIC_REPEATS and float(np.sum(ssd)) <= 0.0:
        return 0.0
    return pooled_variance(float(np.sum(ssd)), dof, prior_variance, prior_dof)


def pooled_variance(ssd: float, dof: float, prior_variance: float, prior_dof: float) -> float:
    """``(prior_dof * prior_variance + ssd) / (prior_dof + dof)``: a sum of squared deviations
    on ``dof`` degrees of freedom pooled with a prior variance worth ``prior_dof`` of them; 0
    when there are neither."""
    total = prior_dof + dof
    return (prior_dof * prior_variance + ssd) / total if total > 0.0 else 0.0


@dataclass
class ValueModel:
    """The fitted value model of masks of ``n`` layers (see the module docstring).

    Values are "higher is better" (the caller flips the sign of a minimised objective) and are
    handled internally standardised by ``y_mean`` and ``y_scale``.

    Attributes:
        n: Mask length.
        beta: Posterior mean of the coefficients (standardised units).
        cov: Posterior covariance of the coefficients (standardised units).
        sigma2: Noise variance of one evaluation (standardised units).
        tau2: Variance of the masks' deviations from the linear part (standardised units).
        y_mean: Mean of the masks' means (original units).
        y_scale: Standard deviation of the masks' means (original units; positive).
        offsets: Each fidelity's offset (original units; the reference's, first, is 0).
        offsets_cov: Posterior covariance of ``beta`` and the offsets but the reference's
            (standardised units), or None with one fidelity.
    """

    n: int
    beta: np.ndarray
    cov: np.ndarray
    sigma2: float
    tau2: float
    y_mean: float
    y_scale: float
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1))
    offsets_cov: np.ndarray | None = None

    @classmethod
    def fit(
        cls,
        n: int,
        codes: np.ndarray,
        counts: np.ndarray,
        means: np.ndarray,
        ssd: np.ndarray,
        fidelity: np.ndarray | None = None,
        *,
        iterations: int = 4,
    ) -> ValueModel | None:
        """Fit to distinct masks ``codes`` with ``counts`` evaluations, mean ``means`` and sum of
        squared deviations ``ssd`` each (rows per mask and ``fidelity`` index, 0 the reference,
        when given); None with fewer than :data:`MIN_MASKS` masks, or when their means are all
        equal (nothing sets the scale of the values, and the noise prior is in units of it: one
        feasible mask and two never-feasible ones entered at its mean, say).
        """
        codes = np.asarray(codes, dtype=np.int64)
        if len(np.unique(codes)) < MIN_MASKS:
            return None
        counts = np.asarray(counts, dtype=float)
        means = np.asarray(means, dtype=float)
        y_mean = float(means.mean())
        y_scale = float(means.std())
        if y_scale <= 1e-12:
            return None
        y = (means - y_mean) / y_scale
        ssd = np.asarray(ssd, dtype=float) / y_scale**2
        x = value_features(codes, n)
        prior = np.full(x.shape[1], PRIOR_PRECISION)
        prior[n + 1 :] = PAIR_PRIOR_PRECISION
        prior[0] = INTERCEPT_PRECISION
        n_fidelities = 1 if fidelity is None or not len(codes) else int(np.max(fidelity)) + 1
        if n_fidelities > 1:
            # One offset per fidelity but the reference, with the bits' prior.
            onehot = np.eye(n_fidelities)[np.asarray(fidelity, dtype=np.int64)][:, 1:]
            x = np.concatenate([x, onehot], axis=1)
            prior = np.concatenate([prior, np.full(n_fidelities - 1, PRIOR_PRECISION)])
        sigma2 = noise_variance(counts, ssd, NOISE_PRIOR_VARIANCE, NOISE_PRIOR_DOF)
        tau2 = 1.0
        for _ in range(iterations):
            beta, cov, dof = _weighted_ridge(x, y, tau2 + sigma2 / counts, prior)
            tau2 = _tau2(y - x @ beta, counts, sigma2, dof)
        beta, cov, _ = _weighted_ridge(x, y, tau2 + sigma2 / counts, prior)
        d = 2 * n
        offsets = np.concatenate([[0.0], beta[d:] * y_scale])
        full = cov if n_fidelities > 1 else None
        return cls(n, beta[:d], cov[:d, :d], sigma2, tau2, y_mean, y_scale, offsets, full)

    @property
    def noise_variance(self) -> float:
        """Variance of one evaluation's noise (original units)."""
        return self.sigma2 * self.y_scale**2

    def posterior(
        self,
        codes: np.ndarray,
        counts: np.ndarray,
        means: np.ndarray,
        shares: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (original units) of the value of evaluated
        masks with ``counts`` evaluations and mean ``means`` each (on the reference fidelity's
        scale; ``shares``: with several fidelities, each mask's share of values under each
        fidelity but the reference, whose offsets' uncertainty the mean carries)."""
        x = value_features(codes, self.n)
        pred = x @ self.beta
        counts = np.asarray(counts, dtype=float)
        y = (np.asarray(means, dtype=float) - self.y_mean) / self.y_scale
        rho = self.tau2 / (self.tau2 + self.sigma2 / counts)
        mean = pred + rho * (y - pred)
        if shares is None or self.offsets_cov is None:
            spread = (1.0 - rho) ** 2 * _quadratic_forms(x, self.cov)
        else:
            # mean = (1 - rho) x.beta + rho (ybar - shares.gamma): both coefficient blocks.
            v = np.concatenate([(1.0 - rho)[:, None] * x, -rho[:, None] * shares], axis=1)
            spread = _quadratic_forms(v, self.offsets_cov)
        var = self.tau2 * (1.0 - rho) + spread
        return mean * self.y_scale + self.y_mean, np.sqrt(np.maximum(var, 0.0)) * self.y_scale

    def predict(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prior-predictive mean and standard deviation (original units) of the value of masks
        not evaluated yet."""
        x = value_features(codes, self.n)
        var = self.tau2 + _quadratic_forms(x, self.cov)
        return x @ self.beta * self.y_scale + self.y_mean, np.sqrt(var) * self.y_scale

    def predict_left_out(
        self, codes: np.ndarray, counts: np.ndarray, means: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (original units) of the value of masks that are rows of
        the fit (reference fidelity, ``counts`` evaluations with mean ``means`` each), as
        :meth:`predict` would give them had each row been left out of the fit: a row's own value
        pulls the linear part towards it by its leverage ``h = w x.cov.x`` (``w`` its weight
        ``1 / (tau2 + sigma2 / count)``), so the linear part without it is
        ``y - (y - x.beta) / (1 - h)``, with variance ``x.cov.x / (1 - h)`` (the variance
        components held as fitted). What a mask's neighbours say it is worth, whatever it
        measured itself."""
        x = value_features(codes, self.n)
        q = _quadratic_forms(x, self.cov)
        weight = 1.0 / (self.tau2 + self.sigma2 / np.asarray(counts, dtype=float))
        keep = np.maximum(1.0 - weight * q, 1e-9)
        y = (np.asarray(means, dtype=float) - self.y_mean) / self.y_scale
        mean = y - (y - x @ self.beta) / keep
        var = self.tau2 + q / keep
        return mean * self.y_scale + self.y_mean, np.sqrt(var) * self.y_scale


def _quadratic_forms(x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``x_i . cov . x_i`` for every row, as a matrix product and a row sum: ten times as fast
    as the equivalent ``einsum`` (2,048 candidates of 12 layers: 0.12 against 1.24 ms)."""
    return np.sum((x @ cov) * x, axis=1)


def _weighted_ridge(
    x: np.ndarray, y: np.ndarray, variance: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior mean and covariance of ``beta`` for ``y ~ N(x beta, diag(variance))`` and
    ``beta ~ N(0, diag(1 / prior))``, and the fit's effective degrees of freedom."""
    w = 1.0 / variance
    gram = x.T @ (x * w[:, None])
    cov = np.linalg.inv(gram + np.diag(prior))
    beta = cov @ (x.T @ (w * y))
    dof = float(np.sum(cov * gram))  # trace(cov @ gram): the hat matrix's trace
    return beta, cov, dof


def _tau2(resid: np.ndarray, counts: np.ndarray, sigma2: float, dof: float) -> float:
    """Method of moments: ``E[sum r^2] ~ (D - dof) * (tau2 + mean(sigma2 / k))``."""
    room = max(len(resid) - dof, 1.0)
    tau2 = float(resid @ resid) / room - float(np.mean(sigma2 / counts))
    return max(tau2, MIN_TAU2)


class FeasibilityModel:
    """P(feasible) of masks of ``n`` layers, from every evaluation seen (see the module
    docstring); 1 everywhere until some evaluation was infeasible.

    A logistic regression on :func:`feasibility_features` with a Gaussian prior of standard
    deviation :data:`FEASIBILITY_PRIOR_SD` on each coefficient, fitted (MAP, Newton's method) to
    each distinct mask's counts of feasible and infeasible evaluations. Unlike a linear
    probability model, it can say that a mask lacking any one of several required layers is
    almost surely infeasible (an AND of bits is linear in the log-odds), which is what pruning
    looks like when dropping any of the top layers collapses the model.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.n_infeasible = 0
        self.n_evaluations = 0
        self._counts: dict[int, list[int]] = {}  # code -> [feasible, evaluations]
        self._coef = np.zeros(2 * n + 1)
        self._fitted_at = -1

    def add(self, code: int, feasible: bool) -> None:
        counts = self._counts.setdefault(code, [0, 0])
        counts[0] += bool(feasible)
        counts[1] += 1
        self.n_evaluations += 1
        self.n_infeasible += not feasible

    def p_feasible(self, codes: np.ndarray) -> np.ndarray:
        """Clipped to [0.01, 1]."""
        if self.n_infeasible == 0:
            return np.ones(len(codes))
        if refit_due(self._fitted_at, self.n_evaluations):
            self._fit()
        logit = feasibility_features(codes, self.n) @ self._coef
        return np.clip(_sigmoid(logit), 0.01, 1.0)

    def p_left_out(self, codes: Sequence[int]) -> np.ndarray:
        """P(feasible) of each of ``codes`` (masks that were evaluated) from the model fitted
        without that mask's evaluations: what the other masks say of it. Approximated by one
        Newton step from the fit with them (the approximate leave-one-out of a generalised
        linear model), which moves its logit by ``-(s - t p) h / (1 - t p (1 - p) h)``, where
        ``s`` of ``t`` evaluations were feasible, ``p`` is the fitted probability and ``h =
        x' H^-1 x`` its leverage (``H`` the posterior precision of the coefficients). Within
        about 0.05 of refits without each mask on 12-layer models with 20 to 120 evaluations.
        Every code must have been evaluated."""
        codes = np.asarray(codes, dtype=np.int64)
        if self.n_infeasible == 0:
            return np.ones(len(codes))
        # A fit that has not seen a mask's evaluations has left them out already: the step
        # would take them out twice. (p_feasible may lag by 1% in a large study; this may not.)
        if self._fitted_at != self.n_evaluations:
            self._fit()
        x, counts = self._data()
        p = _sigmoid(x @ self._coef)
        precision = logistic_precision(x, counts[:, 1], p, _FEASIBILITY_PRIOR_PRECISION)
        own = feasibility_features(codes, self.n)
        z = own @ self._coef
        p_own = _sigmoid(z)
        leverage = np.einsum("ij,ij->i", own, np.linalg.solve(precision, own.T).T)
        mine = np.array([self._counts[int(c)] for c in codes], dtype=float).reshape(-1, 2)
        weight = mine[:, 1] * p_own * (1.0 - p_own)
        residual = mine[:, 0] - mine[:, 1] * p_own
        return _sigmoid(z - residual * leverage / (1.0 - weight * leverage))

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        """Features of every evaluated mask, and its ``[feasible, evaluations]`` counts."""
        codes = np.fromiter(self._counts, dtype=np.int64, count=len(self._counts))
        counts = np.array(list(self._counts.values()), dtype=float)
        return feasibility_features(codes, self.n), counts

    def _fit(self) -> None:
        x, counts = self._data()
        self._coef = logistic_map(x, counts[:, 0], counts[:, 1], _FEASIBILITY_PRIOR_PRECISION)
        self._fitted_at = self.n_evaluations


def logistic_map(
    x: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    precision: float,
    *,
    iterations: int = 50,
    tol: float = 1e-8,
) -> np.ndarray:
    """MAP coefficients of a binomial logistic regression: ``successes_i ~ Binomial(trials_i,
    sigmoid(x_i . w))`` with prior ``w ~ N(0, I / precision)``, by Newton's method from 0 with
    step halving (a full Newton step can overshoot where the fitted probabilities saturate)."""

    def log_posterior(w: np.ndarray, z: np.ndarray) -> float:
        return float(successes @ z - trials @ np.logaddexp(0.0, z) - 0.5 * precision * (w @ w))

    w = np.zeros(x.shape[1])
    z = x @ w
    value = log_posterior(w, z)
    for _ in range(iterations):
        p = _sigmoid(z)
        gradient = x.T @ (successes - trials * p) - precision * w
        step = np.linalg.solve(logistic_precision(x, trials, p, precision), gradient)
        scale = 1.0
        while True:
            candidate = w + scale * step
            candidate_z = x @ candidate
            candidate_value = log_posterior(candidate, candidate_z)
            if candidate_value >= value or scale < 1e-6:
                break
            scale /= 2.0
        w, z, value = candidate, candidate_z, candidate_value
        if float(np.max(np.abs(scale * step))) < tol:
            break
    return w


def logistic_precision(
    x: np.ndarray, trials: np.ndarray, p: np.ndarray, precision: float
) -> np.ndarray:
    """The posterior precision of a binomial logistic regression's coefficients at fitted
    probabilities ``p`` (minus the Hessian of its log posterior): ``x' diag(t p (1 - p)) x``
    plus the prior's ``precision`` on the diagonal."""
    return x.T @ (x * (trials * p * (1.0 - p))[:, None]) + precision * np.eye(x.shape[1])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))
