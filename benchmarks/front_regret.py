"""Two-objective studies (maximize accuracy, minimize parameters) on noisy tabular landscapes: how
good is the front a user reads?

A two-objective search is read as a menu: for a size budget of ``d`` layers, a user takes the
front's point of at most ``d`` layers with the best reported accuracy. That point is what is
scored: its TRUE accuracy against the best true accuracy of a feasible mask of at most ``d``
layers (a named mask that is truly infeasible, or no point within the budget, scores the worst
feasible true accuracy within it). The regret of a study is the mean over every budget ``d`` = 1
.. L-1 that some feasible mask meets.

The objective is ``sampler_regret.py``'s, with two values: it draws ``A_obs = A + N(0, sigma)``
afresh per evaluation, records ``accuracy`` and ``n_params``, prunes ``A_obs`` under the floor or
more than 100e6 parameters, and returns ``(A_obs, N)``. The front is
``alphanas_optuna.winners(study)`` for AlphaNAS and ``study.best_trials`` (the non-dominated
observed values) for Optuna's samplers, which is what their users read.

    # 3 instances of each synthetic family, seeds 0-19, sigma 0.02, 50 trials:
    python benchmarks/front_regret.py --out front.json
    # the mean regret of each sampler, per family, with standard errors over the studies:
    python benchmarks/front_regret.py --table front.json
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from landscapes import PROFILES, Landscape, synthetic_landscape  # noqa: E402
from sampler_dev import parse_range, run_studies  # noqa: E402
from sampler_regret import make_objective  # noqa: E402

from alphanas_optuna import AlphaNASSampler, winners  # noqa: E402
from alphanas_optuna.answer import NoWinnerError  # noqa: E402
from alphanas_optuna.mask import format_mask  # noqa: E402

MAX_PARAMS = 100e6
CHECKPOINTS = (25, 50, 100)
SAMPLERS = {
    "Random": lambda s: optuna.samplers.RandomSampler(seed=s),
    "TPE": lambda s: optuna.samplers.TPESampler(seed=s),
    "NSGA-II": lambda s: optuna.samplers.NSGAIISampler(seed=s),
    "AlphaNAS": lambda s: AlphaNASSampler(seed=s),
}


def named_front(study: optuna.Study, sampler_name: str) -> list[tuple[str, float]]:
    """The front a user reads: (mask, reported accuracy) per point."""
    if sampler_name.startswith("AlphaNAS"):
        try:
            return [(w.mask, w.quality) for w in winners(study)]
        except NoWinnerError:
            return []
    n = len(study.trials[0].distributions) if study.trials else 0
    return [
        (format_mask(int(t.params[f"layer_{i:02d}"]) for i in range(n)), t.values[0])
        for t in study.best_trials
    ]


def front_regret(landscape: Landscape, front: list[tuple[str, float]]) -> float:
    """Mean over the size budgets (see the module docstring) of the chosen point's true regret."""
    feasible = [m for m in landscape.accuracy if landscape.feasible(m, None, MAX_PARAMS)]
    out = []
    for budget in range(1, landscape.n_layers):
        within = [landscape.accuracy[m] for m in feasible if m.count("1") <= budget]
        if not within:
            continue
        best, worst = max(within), min(within)
        points = [(acc, m) for m, acc in front if m.count("1") <= budget]
        if not points:
            out.append(best - worst)
            continue
        _, mask = max(points)
        if not landscape.feasible(mask, None, MAX_PARAMS):
            out.append(best - worst)
        else:
            out.append(max(best - landscape.accuracy[mask], 0.0))
    return float(np.mean(out))


def run_once(
    landscape: Landscape, sampler_name: str, seed: int, n_trials: int, sigma: float
) -> dict[int, float]:
    """The front's regret after each checkpoint."""
    noise = np.random.default_rng([seed, zlib.crc32(landscape.name.encode()), int(sigma * 1e4)])
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=SAMPLERS[sampler_name](seed)
    )
    study.set_user_attr("alphanas_config", {"fitness": {"min_accuracy": landscape.min_accuracy}})
    regret: dict[int, float] = {}

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        k = trial.number + 1
        if k in CHECKPOINTS:
            regret[k] = front_regret(landscape, named_front(study, sampler_name))

    objective = make_objective(landscape, 0.0, sigma, noise, two_objectives=True)
    study.optimize(objective, n_trials=n_trials, callbacks=[callback])
    return regret


def _task(spec: tuple) -> tuple:
    family, instance, sampler_name, seed, n_trials, sigma = spec
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    landscape = synthetic_landscape(family, instance)
    return (
        family,
        instance,
        sampler_name,
        seed,
        run_once(landscape, sampler_name, seed, n_trials, sigma),
    )


def table(path: str) -> None:
    with open(path) as f:
        rows = json.load(f)
    by: dict[tuple, list[float]] = defaultdict(list)
    for family, _, sampler, _, result in rows:
        for k, r in result.items():
            by[(k, family, sampler)].append(r)
            by[(k, "all", sampler)].append(r)
    samplers = sorted({r[2] for r in rows}, key=list(SAMPLERS).index)
    families = sorted({r[0] for r in rows}) + ["all"]
    for k in sorted({k for k, _, _ in by}, key=int):
        print(f"\nafter {k} trials: mean regret of the front (accuracy), +- s.e.")
        print("| family | " + " | ".join(samplers) + " |")
        print("|---" * (len(samplers) + 1) + "|")
        for family in families:
            cells = []
            for s in samplers:
                v = np.array(by[(k, family, s)])
                cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) / np.sqrt(len(v)):.4f}")
            print(f"| {family} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="JSON file of the runs")
    parser.add_argument("--table", help="print the tables of a JSON file of runs and stop")
    parser.add_argument("--families", nargs="+", default=list(PROFILES))
    parser.add_argument("--instances", type=parse_range, default=parse_range("0-2"))
    parser.add_argument("--seeds", type=parse_range, default=parse_range("0-19"))
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--sigma", type=float, default=0.02)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.table:
        table(args.table)
        return 0
    if not args.out:
        parser.error("--out is required unless --table is given")
    specs = [
        (family, instance, sampler, seed, args.trials, args.sigma)
        for family in args.families
        for instance in args.instances
        for sampler in args.samplers
        for seed in args.seeds
    ]
    run_studies(_task, specs, args.jobs, args.out)
    table(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
