"""Regret of AlphaNASSampler against Optuna's samplers on tabular mask landscapes, and ask overhead.

Every mask's (accuracy A, parameters N) is looked up in a table, so a search costs nothing. The
objective is the real one's: it suggests the mask with ``suggest_mask``, records A and N as user
attributes, prunes (``optuna.TrialPruned``) masks with A < 0.75 or N > 100e6, and returns
Q = A - lam * N / 1e6.

Regret after k evaluations = (best feasible Q of the landscape) - (best Q among the feasible
trials of the first k); a run that found no feasible mask yet scores the worst feasible Q.
Every trial counts as an evaluation, including pruned ones and repeated masks.

Usage::

    python benchmarks/sampler_regret.py                  # full run, prints Markdown tables
    python benchmarks/sampler_regret.py --quick          # smoke run (3 seeds, 2 landscapes)
    python benchmarks/sampler_regret.py --overhead-only  # only the ask-overhead measurement
    python benchmarks/sampler_regret.py --table benchmarks/data/minilm-l6-imdb.csv --lam 0.002
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from landscapes import Landscape, synthetic_landscape, table_landscape  # noqa: E402

from alphanas_optuna import AlphaNASSampler, suggest_mask  # noqa: E402
from alphanas_optuna.mask import format_mask  # noqa: E402

DEFAULT_TABLE = Path(__file__).resolve().parent / "data" / "minilm-l6-imdb.csv"
CHECKPOINTS = (10, 25, 50, 100)
MAX_PARAMS = 100e6

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]

SAMPLERS: dict[str, SamplerFactory] = {
    "Random": lambda s: optuna.samplers.RandomSampler(seed=s),
    "TPE": lambda s: optuna.samplers.TPESampler(seed=s),
    "NSGA-II": lambda s: optuna.samplers.NSGAIISampler(seed=s),
    "NSGA-II (pop 10)": lambda s: optuna.samplers.NSGAIISampler(population_size=10, seed=s),
    "AlphaNAS plain": lambda s: AlphaNASSampler(seed=s, surrogate=False),
    "AlphaNAS": lambda s: AlphaNASSampler(seed=s),
    "AlphaNAS + prior": lambda s: AlphaNASSampler(seed=s, init_bottom_bias=0.6),
}


def make_objective(landscape: Landscape, lam: float) -> Callable[[optuna.Trial], float]:
    """The real objective's contract on a table: suggest, look up, prune infeasible, return Q."""

    def objective(trial: optuna.Trial) -> float:
        mask = format_mask(suggest_mask(trial, landscape.n_layers))
        if mask not in landscape.accuracy:  # The all-zero mask (other samplers may draw it).
            trial.set_user_attr("accuracy", 0.5)
            trial.set_user_attr("n_params", 0.0)
            raise optuna.TrialPruned()
        accuracy = landscape.accuracy[mask]
        n_params = landscape.n_params[mask]
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("n_params", n_params)
        if accuracy < landscape.min_accuracy or n_params > MAX_PARAMS:
            raise optuna.TrialPruned()
        return accuracy - lam * n_params / 1e6

    return objective


def run_once(
    landscape: Landscape, factory: SamplerFactory, seed: int, n_trials: int, lam: float
) -> np.ndarray:
    """Best feasible Q after each evaluation (NaN until a feasible one is found)."""
    study = optuna.create_study(direction="maximize", sampler=factory(seed))
    study.optimize(make_objective(landscape, lam), n_trials=n_trials)
    best = np.full(n_trials, np.nan)
    current = -math.inf
    for i, t in enumerate(study.trials[:n_trials]):
        if t.state == optuna.trial.TrialState.COMPLETE:
            current = max(current, float(t.value))
        best[i] = current if current > -math.inf else np.nan
    return best


def evaluate(
    landscapes: list[Landscape],
    samplers: dict[str, SamplerFactory],
    seeds: list[int],
    n_trials: int,
    lam: float,
) -> dict[tuple[str, str], dict[str, object]]:
    results: dict[tuple[str, str], dict[str, object]] = {}
    for landscape in landscapes:
        _, q_best, q_worst = landscape.optimum(lam, None, MAX_PARAMS)
        for name, factory in samplers.items():
            start = time.perf_counter()
            curves = []
            for seed in seeds:
                best = run_once(landscape, factory, seed, n_trials, lam)
                best = np.where(np.isnan(best), q_worst, best)
                curves.append(q_best - best)
            regret = np.maximum(np.array(curves), 0.0)
            found = regret <= 1e-12
            first = [int(np.argmax(row)) + 1 if row.any() else None for row in found]
            results[(landscape.name, name)] = {
                "regret": regret,
                "found": [f is not None for f in first],
                "first": [f for f in first if f is not None],
                "seconds": time.perf_counter() - start,
            }
            r50 = regret[:, min(50, n_trials) - 1]
            print(
                f"  {landscape.name:24s} {name:18s} regret@50 {r50.mean():.4f} "
                f"({time.perf_counter() - start:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    return results


def markdown_regret(
    landscapes: list[Landscape],
    samplers: list[str],
    results: dict[tuple[str, str], dict[str, object]],
    n_trials: int,
    lam: float,
) -> str:
    lines = []
    checkpoints = [c for c in CHECKPOINTS if c <= n_trials]
    for landscape in landscapes:
        mask, q_best, _ = landscape.optimum(lam, None, MAX_PARAMS)
        n_feasible = sum(landscape.feasible(m) for m in landscape.accuracy)
        lines.append(
            f"**{landscape.name}** ({landscape.n_layers} layers, {n_feasible} of "
            f"{len(landscape.accuracy)} masks feasible; optimum `{mask}`, Q = {q_best:.4f})\n"
        )
        header = "| sampler | " + " | ".join(f"regret @{c}" for c in checkpoints)
        header += " | found optimum | evals to optimum (mean, runs that found it) |"
        lines.append(header)
        lines.append("|" + "---|" * (len(checkpoints) + 3))
        best_at_50 = min(
            results[(landscape.name, s)]["regret"][:, min(50, n_trials) - 1].mean()  # type: ignore[index]
            for s in samplers
        )
        for s in samplers:
            r = results[(landscape.name, s)]
            regret = r["regret"]
            cells = []
            for c in checkpoints:
                col = regret[:, c - 1]  # type: ignore[index]
                se = col.std(ddof=1) / math.sqrt(len(col)) if len(col) > 1 else 0.0
                cell = f"{col.mean():.4f} ± {se:.4f}"
                if c == min(50, n_trials) and abs(col.mean() - best_at_50) < 1e-12:
                    cell = f"**{cell}**"
                cells.append(cell)
            found = r["found"]
            first = r["first"]
            share = f"{sum(found)}/{len(found)}"  # type: ignore[arg-type]
            mean_first = f"{np.mean(first):.1f}" if first else "–"
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {share} | {mean_first} |")
        lines.append("")
    return "\n".join(lines)


def summary_table(
    landscapes: list[Landscape],
    samplers: list[str],
    results: dict[tuple[str, str], dict[str, object]],
    n_trials: int,
) -> str:
    c = min(50, n_trials)
    lines = ["| landscape | " + " | ".join(samplers) + " |", "|" + "---|" * (len(samplers) + 1)]
    for landscape in landscapes:
        means = [results[(landscape.name, s)]["regret"][:, c - 1].mean() for s in samplers]  # type: ignore[index]
        best = min(means)
        cells = [f"**{m:.4f}**" if abs(m - best) < 1e-12 else f"{m:.4f}" for m in means]
        lines.append(f"| {landscape.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Ask overhead


def _fill_study(path: str, n_trials: int, n_layers: int, population: int, seed: int) -> None:
    """A SQLite study with ``n_trials`` finished trials as AlphaNASSampler leaves them (proposal
    attributes with the generation, cached elites)."""
    from optuna.distributions import CategoricalDistribution

    rng = np.random.default_rng(seed)
    landscape_fitness = rng.normal(size=n_layers)
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")

    @event.listens_for(storage.engine, "connect")
    def _fast(dbapi_connection, _record):  # Filling only: the measured runs use the defaults.
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    study = optuna.create_study(storage=storage, study_name="overhead", direction="maximize")
    dist = CategoricalDistribution((0, 1))
    trials = []
    for i in range(n_trials):
        bits = rng.integers(0, 2, n_layers)
        if not bits.any():
            bits[0] = 1
        mask = format_mask(bits)
        generation = i // population
        pruned = rng.random() < 0.2
        trials.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED
                if pruned
                else optuna.trial.TrialState.COMPLETE,
                value=None if pruned else float(bits @ landscape_fitness),
                params={f"layer_{j:02d}": int(b) for j, b in enumerate(bits)},
                distributions={f"layer_{j:02d}": dist for j in range(n_layers)},
                system_attrs={
                    "AlphaNASSampler:proposal": {
                        "mask": mask,
                        "origin": "child",
                        "parent": None,
                        "generation": generation,
                    },
                },
            )
        )
    study.add_trials(trials)
    # Cache the elites of every generation, as a run would have.
    sampler = AlphaNASSampler(population_size=population, seed=seed)
    study.sampler = sampler
    sampler.get_parent_population(study, n_trials // population)


def measure_overhead(
    samplers: dict[str, SamplerFactory], n_finished: int, n_layers: int, n_asks: int
) -> list[tuple[str, float, float, float]]:
    """Per sampler: median seconds of ask + suggest_mask, of tell, and the mean of ask + suggest."""
    workdir = tempfile.mkdtemp(prefix="alphanas-overhead-")
    template = os.path.join(workdir, "template.db")
    start = time.perf_counter()
    _fill_study(template, n_finished, n_layers, 10, 0)
    print(f"  filled {n_finished} trials in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    rows = []
    rng = np.random.default_rng(1)
    weights = rng.normal(size=n_layers)
    try:
        studies = {}
        for i, (name, factory) in enumerate(samplers.items()):
            path = os.path.join(workdir, f"{i}.db")
            shutil.copy(template, path)
            studies[name] = optuna.load_study(
                study_name="overhead", storage=f"sqlite:///{path}", sampler=factory(0)
            )
        asks: dict[str, list[float]] = {name: [] for name in samplers}
        tells: dict[str, list[float]] = {name: [] for name in samplers}
        # Round-robin over the samplers, so that load from other processes hits them alike.
        for i in range(n_asks + 1):
            for name, study in studies.items():
                t0 = time.perf_counter()
                trial = study.ask()
                mask = suggest_mask(trial, n_layers)
                t1 = time.perf_counter()
                study.tell(trial, float(np.dot(mask, weights)))
                t2 = time.perf_counter()
                if i > 0:  # The first ask loads the study into the storage cache.
                    asks[name].append(t1 - t0)
                    tells[name].append(t2 - t1)
        for name in samplers:
            rows.append(
                (
                    name,
                    float(np.median(asks[name])),
                    float(np.median(tells[name])),
                    float(np.mean(asks[name])),
                )
            )
            print(f"  {name:18s} ask {1000 * rows[-1][1]:.1f} ms", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def markdown_overhead(rows: list[tuple[str, float, float, float]]) -> str:
    random_ask = next(r[1] for r in rows if r[0] == "Random")
    lines = [
        "| sampler | ask + suggest_mask, median (ms) | mean (ms) | × Random | tell, median (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, ask, tell, mean in rows:
        lines.append(
            f"| {name} | {1000 * ask:.1f} | {1000 * mean:.1f} | {ask / random_ask:.2f} | "
            f"{1000 * tell:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 seeds, 2 landscapes")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per sampler and landscape")
    parser.add_argument("--n-trials", type=int, default=100, help="evaluations per run")
    parser.add_argument("--lam", type=float, default=0.002, help="lambda per million parameters")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="measured mask table")
    parser.add_argument(
        "--table-min-accuracy",
        type=float,
        default=0.70,
        help="feasibility floor of the measured table (that of studies/minilm-imdb-evidence.toml)",
    )
    parser.add_argument(
        "--table-seed",
        type=int,
        default=None,
        help="only this training seed's rows of the table (default: average the seeds)",
    )
    parser.add_argument("--instances", type=int, default=2, help="instances per synthetic profile")
    parser.add_argument("--samplers", nargs="*", default=None, help="subset of sampler names")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the measured table")
    parser.add_argument("--overhead-only", action="store_true")
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--overhead-trials", type=int, default=5000)
    parser.add_argument("--overhead-asks", type=int, default=30)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    samplers = SAMPLERS
    if args.samplers:
        unknown = set(args.samplers) - set(SAMPLERS)
        if unknown:
            parser.error(f"unknown samplers {sorted(unknown)}; choose from {list(SAMPLERS)}")
        samplers = {k: v for k, v in SAMPLERS.items() if k in args.samplers}
    seeds = list(range(3 if args.quick else args.seeds))

    if not args.overhead_only:
        profiles = ("top", "random") if args.quick else ("top", "middle", "random", "bottom")
        instances = 1 if args.quick else args.instances
        landscapes = [synthetic_landscape(p, i) for p in profiles for i in range(instances)]
        if args.skip_synthetic:
            landscapes = []
        if args.table.exists():
            try:
                landscapes.append(
                    table_landscape(
                        args.table, min_accuracy=args.table_min_accuracy, seed=args.table_seed
                    )
                )
            except ValueError as error:  # Still being measured: some masks are missing.
                print(f"incomplete table, skipping landscape (b): {error}", file=sys.stderr)
        else:
            print(f"no measured table at {args.table}: skipping landscape (b)", file=sys.stderr)
        results = evaluate(landscapes, samplers, seeds, args.n_trials, args.lam)
        print(f"## Regret (lam = {args.lam}, {len(seeds)} seeds, {args.n_trials} evaluations)\n")
        print("Mean regret at 50 evaluations (lower is better):\n")
        print(summary_table(landscapes, list(samplers), results, args.n_trials))
        print()
        print(markdown_regret(landscapes, list(samplers), results, args.n_trials, args.lam))
    if not args.no_overhead:
        n_asks = 5 if args.quick else args.overhead_asks
        n_finished = 500 if args.quick else args.overhead_trials
        rows = measure_overhead(samplers, n_finished, 12, n_asks)
        print(f"## Ask overhead ({n_finished} finished trials, SQLite, 12 layers, {n_asks} asks)\n")
        print(markdown_overhead(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
