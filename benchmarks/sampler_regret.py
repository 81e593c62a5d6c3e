"""True regret of the mask each sampler NAMES, on noisy tabular landscapes; and ask overhead.

Every mask's true (accuracy A, parameters N) is looked up in a table, so a search costs nothing.
Each evaluation draws ``A_obs = A + N(0, sigma)`` afresh, as a brief fine-tune with a new seed
would. The objective is the real one's: it suggests the mask with ``suggest_mask``, records A_obs,
N and Q_obs as user attributes (``accuracy``, ``n_params``, ``quality``), prunes
(``optuna.TrialPruned``) masks with A_obs < the landscape's floor or N > 100e6, and returns
Q_obs = A_obs - lam * N / 1e6.

What a user reads as the study's answer is what is scored: ``alphanas_optuna.winner(study)`` for
AlphaNAS, ``study.best_trial`` for Optuna's samplers. Regret after k trials = (best true Q of a
feasible mask) - (true Q of the mask named after k trials); a named mask that is truly
infeasible, or no answer at all, scores the worst feasible true Q. Every trial counts,
including pruned ones and re-evaluations.

Usage::

    python benchmarks/sampler_regret.py                  # full run, prints Markdown tables
    python benchmarks/sampler_regret.py --quick          # smoke run
    python benchmarks/sampler_regret.py --overhead-only  # only the ask-overhead measurement
    python benchmarks/sampler_regret.py --instances 3 --sigmas 0 0.02 --jobs 2 --csv out.csv
    # re-run one sampler; the other samplers' rows come from the stored runs:
    python benchmarks/sampler_regret.py --no-overhead --jobs 2 --samplers AlphaNAS \
        --update benchmarks/data/sampler-regret.csv
    # the tables of the stored runs, without running anything:
    python benchmarks/sampler_regret.py --tables-from benchmarks/data/sampler-regret.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from landscapes import PROFILES, Landscape, synthetic_landscape, table_landscape  # noqa: E402

from alphanas_optuna import AlphaNASSampler, suggest_mask, winner  # noqa: E402
from alphanas_optuna.answer import NoWinnerError  # noqa: E402
from alphanas_optuna.mask import format_mask  # noqa: E402

DEFAULT_TABLE = Path(__file__).resolve().parent / "data" / "minilm-l6-imdb.csv"
CHECKPOINTS = (25, 50, 100)
MAX_PARAMS = 100e6
OPTUNA_SAMPLERS = ("Random", "TPE", "NSGA-II")

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]

SAMPLERS: dict[str, SamplerFactory] = {
    "Random": lambda s: optuna.samplers.RandomSampler(seed=s),
    "TPE": lambda s: optuna.samplers.TPESampler(seed=s),
    "NSGA-II": lambda s: optuna.samplers.NSGAIISampler(seed=s),
    "AlphaNAS plain": lambda s: AlphaNASSampler(seed=s, surrogate=False),
    "AlphaNAS no re-eval": lambda s: AlphaNASSampler(seed=s, reevaluation_share=0.0),
    "AlphaNAS": lambda s: AlphaNASSampler(seed=s),
}
DEFAULT_SAMPLERS = ("Random", "TPE", "NSGA-II", "AlphaNAS plain", "AlphaNAS")


def make_objective(
    landscape: Landscape,
    lam: float,
    sigma: float,
    rng: np.random.Generator,
    *,
    shift: Callable[[str], float] | None = None,
    fidelity: str | None = None,
    collapse_rate: float = 0.0,
    two_objectives: bool = False,
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """The real objective's contract on a table: suggest, draw A_obs, prune infeasible, return Q.

    ``shift`` (mask -> accuracy offset) and ``fidelity`` (recorded as the trial's ``fidelity``
    user attribute, as AlphaNASObjective records its settings) stand for other training
    settings (``resumed_fidelity.py``). ``collapse_rate``: the chance that an evaluation's
    fine-tune collapses to the majority class whatever the mask (A_obs = 0.5, chance on balanced
    labels; a real brief fine-tune does this on some seeds, BENCHMARKS.md "The search against
    layer-dropping rules"); 0 draws nothing, so the other draws stay as they were.
    ``two_objectives``: return ``(A_obs, N)`` instead (``front_regret.py``)."""

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        mask = format_mask(suggest_mask(trial, landscape.n_layers))
        if fidelity is not None:
            trial.set_user_attr("fidelity", fidelity)
        if mask not in landscape.accuracy:  # The all-zero mask (other samplers may draw it).
            trial.set_user_attr("n_params", 0.0)
            raise optuna.TrialPruned()
        n_params = landscape.n_params[mask]
        trial.set_user_attr("n_params", n_params)
        if n_params > MAX_PARAMS:
            raise optuna.TrialPruned()
        accuracy = landscape.accuracy[mask] + (sigma * rng.standard_normal() if sigma else 0.0)
        if collapse_rate and rng.random() < collapse_rate:
            accuracy = 0.5
        if shift is not None:
            accuracy += shift(mask)
        quality = accuracy - lam * n_params / 1e6
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("quality", quality)
        if accuracy < landscape.min_accuracy:
            raise optuna.TrialPruned()
        return (accuracy, n_params) if two_objectives else quality

    return objective


def named_mask(study: optuna.Study, sampler_name: str) -> str | None:
    """What a user reads as the study's answer."""
    if sampler_name.startswith("AlphaNAS"):
        try:
            return winner(study).mask
        except NoWinnerError:
            return None
    try:
        return format_mask(
            int(study.best_trial.params[f"layer_{i:02d}"])
            for i in range(len(study.best_trial.params))
        )
    except ValueError:  # No COMPLETE trial.
        return None


def run_once(
    landscape: Landscape,
    sampler_name: str,
    seed: int,
    n_trials: int,
    lam: float,
    sigma: float,
    pruned: dict[int, int] | None = None,
    collapse_rate: float = 0.0,
) -> dict[int, float]:
    """True regret of the named mask after each checkpoint (and, into ``pruned`` if given, the
    number of PRUNED trials by then); ``collapse_rate`` as in :func:`make_objective`."""
    _, q_best, q_worst = landscape.optimum(lam, None, MAX_PARAMS)
    noise = np.random.default_rng([seed, zlib.crc32(landscape.name.encode()), int(sigma * 1e4)])
    study = optuna.create_study(direction="maximize", sampler=SAMPLERS[sampler_name](seed))
    # As `alphanas search` does: the study records its settings, the accuracy floor among them.
    study.set_user_attr("alphanas_config", {"fitness": {"min_accuracy": landscape.min_accuracy}})
    checkpoints = [c for c in CHECKPOINTS if c <= n_trials]
    regret: dict[int, float] = {}

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        k = trial.number + 1
        if k in checkpoints:
            mask = named_mask(study, sampler_name)
            if mask is None or not landscape.feasible(mask, None, MAX_PARAMS):
                regret[k] = q_best - q_worst
            else:
                regret[k] = max(q_best - landscape.fitness(mask, lam), 0.0)
            if pruned is not None:
                states = (optuna.trial.TrialState.PRUNED,)
                pruned[k] = len(study.get_trials(deepcopy=False, states=states))

    study.optimize(
        make_objective(landscape, lam, sigma, noise, collapse_rate=collapse_rate),
        n_trials=n_trials,
        callbacks=[callback],
    )
    return regret


def _task(args: tuple) -> list[tuple]:
    spec, sampler_name, seed, n_trials, lam, sigma = args
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    landscape = _landscape(spec)
    start = time.perf_counter()
    regret = run_once(landscape, sampler_name, seed, n_trials, lam, sigma)
    seconds = time.perf_counter() - start
    return [(landscape.name, sigma, sampler_name, seed, k, r, seconds) for k, r in regret.items()]


_LANDSCAPES: dict[tuple, Landscape] = {}


def _landscape(spec: tuple) -> Landscape:
    if spec not in _LANDSCAPES:
        if spec[0] == "synthetic":
            _LANDSCAPES[spec] = synthetic_landscape(spec[1], spec[2])
        else:
            _, path, min_accuracy, table_seed = spec
            _LANDSCAPES[spec] = table_landscape(path, min_accuracy=min_accuracy, seed=table_seed)
    return _LANDSCAPES[spec]


def evaluate(
    specs: list[tuple],
    samplers: list[str],
    seeds: list[int],
    n_trials: int,
    lam: float,
    sigmas: list[float],
    jobs: int,
) -> list[tuple]:
    tasks = [
        (spec, name, seed, n_trials, lam, sigma)
        for sigma in sigmas
        for spec in specs
        for name in samplers
        for seed in seeds
    ]
    rows: list[tuple] = []
    start = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for i, out in enumerate(pool.map(_task, tasks, chunksize=4)):
                rows.extend(out)
                if (i + 1) % 200 == 0:
                    print(
                        f"  {i + 1}/{len(tasks)} runs, {time.perf_counter() - start:.0f}s",
                        file=sys.stderr,
                        flush=True,
                    )
    else:
        for i, task in enumerate(tasks):
            rows.extend(_task(task))
            if (i + 1) % 200 == 0:
                print(
                    f"  {i + 1}/{len(tasks)} runs, {time.perf_counter() - start:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


CSV_HEADER = ["landscape", "lam", "sigma", "sampler", "seed", "trials", "regret"]


def to_stored(rows: list[tuple], lam: float) -> list[tuple]:
    """Rows of :func:`evaluate` at ``lam`` as stored: ``(landscape, lam, sigma, sampler, seed,
    trials, regret)``."""
    return [(r[0], lam, r[1], r[2], r[3], r[4], r[5]) for r in rows]


def from_stored(stored: list[tuple], lam: float) -> tuple[list[tuple], list[str]]:
    """The stored rows at ``lam`` as :func:`evaluate` returns them, and the samplers they hold
    (in the order of :data:`SAMPLERS`)."""
    at_lam = [r for r in stored if r[1] == lam]
    present = {r[3] for r in at_lam}
    rows = [(r[0], r[2], r[3], r[4], r[5], r[6], 0.0) for r in at_lam]
    return rows, [s for s in SAMPLERS if s in present]


def write_rows(path: Path, rows: list[tuple]) -> None:
    """Write stored rows (see :func:`to_stored`)."""
    partial = Path(f"{path}.partial")
    with open(partial, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        w.writerows((*r[:6], f"{r[6]:.5f}") for r in rows)
    os.replace(partial, path)  # A crash mid-write leaves the stored runs as they were.


def read_rows(path: Path) -> list[tuple]:
    """Stored rows ``(landscape, lam, sigma, sampler, seed, trials, regret)``."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header != CSV_HEADER:
            raise SystemExit(f"{path}: header must be {','.join(CSV_HEADER)}, got {header}")
        return [
            (r[0], float(r[1]), float(r[2]), r[3], int(r[4]), int(r[5]), float(r[6]))
            for r in reader
        ]


def merge_rows(stored: list[tuple], new: list[tuple], lam: float) -> list[tuple]:
    """``stored`` with every run that ``new`` (from :func:`evaluate`, at ``lam``) repeats replaced
    in place by the new one; runs not stored yet come last."""
    fresh: dict[tuple, list[tuple]] = {}
    for row in to_stored(new, lam):
        fresh.setdefault(row[:5], []).append(row)
    merged: list[tuple] = []
    for r in stored:
        key = r[:5]
        if key not in fresh:
            merged.append(r)
        elif fresh[key]:
            merged.extend(fresh[key])
            fresh[key] = []  # Emitted; the run's other stored rows are dropped.
    for rows in fresh.values():
        merged.extend(rows)
    return merged


def _mean_se(values: list[float]) -> tuple[float, float]:
    a = np.array(values, dtype=float)
    se = a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else 0.0
    return float(a.mean()), float(se)


def family(name: str) -> str:
    parts = name.split("-")
    return "-".join(parts[:2]) if parts[0] == "synthetic" else name


def markdown(rows: list[tuple], samplers: list[str], lam: float) -> str:
    """Per sigma: mean true regret ± s.e. per landscape family at each checkpoint, the ratio to
    the best Optuna sampler, and on how many landscape instances AlphaNAS is lowest."""
    out = []
    sigmas = sorted({r[1] for r in rows})
    checkpoints = sorted({r[4] for r in rows})
    ours = "AlphaNAS" if "AlphaNAS" in samplers else samplers[-1]
    for sigma in sigmas:
        sub = [r for r in rows if r[1] == sigma]
        names = sorted({r[0] for r in sub})
        families = sorted({family(n) for n in names}, key=lambda f: (not f.startswith("synth"), f))
        n_seeds = len({r[3] for r in sub})
        out.append(f"### sigma = {sigma} (lam = {lam}, {n_seeds} seeds per landscape)\n")
        for k in checkpoints:
            out.append(f"**After {k} trials**: mean true regret of the named mask ± s.e.\n")
            out.append(
                "| family (instances) | " + " | ".join(samplers) + f" | {ours} / best Optuna |"
            )
            out.append("|" + "---|" * (len(samplers) + 2))
            ratios = []
            behind_tpe = []  # families where `ours` trails TPE by > 1 s.e. of the difference
            for fam in families:
                inst = [n for n in names if family(n) == fam]
                cells = []
                means = {}
                ses = {}
                for s in samplers:
                    vals = [r[5] for r in sub if r[2] == s and r[4] == k and family(r[0]) == fam]
                    means[s], ses[s] = _mean_se(vals)
                    cells.append(f"{means[s]:.4f} ± {ses[s]:.4f}")
                if "TPE" in means and ours != "TPE":
                    if means[ours] - means["TPE"] > math.hypot(ses[ours], ses["TPE"]):
                        behind_tpe.append(fam)
                best_optuna = min(
                    (means[s] for s in samplers if s in OPTUNA_SAMPLERS), default=math.nan
                )
                ratio = means[ours] / best_optuna if best_optuna > 0 else math.nan
                ratios.append(ratio)
                low = min(means.values())
                cells = [
                    f"**{c}**" if abs(means[s] - low) < 1e-12 else c
                    for c, s in zip(cells, samplers)
                ]
                out.append(f"| {fam} ({len(inst)}) | " + " | ".join(cells) + f" | {ratio:.2f} |")
            out.append("")
            # Per instance: is AlphaNAS below every Optuna sampler?
            # And is it behind the best of them by more than two standard errors of the
            # difference, paired by seed (the noise draws depend only on landscape, seed, sigma)?
            wins = 0
            behind = []
            for n in names:
                by_seed = {
                    s: {r[3]: r[5] for r in sub if r[2] == s and r[4] == k and r[0] == n}
                    for s in samplers
                }
                m = {s: np.mean(list(v.values())) for s, v in by_seed.items()}
                rivals = [s for s in samplers if s in OPTUNA_SAMPLERS]
                wins += all(m[ours] < m[s] for s in rivals)
                if rivals:
                    rival = min(rivals, key=m.__getitem__)
                    seeds = sorted(set(by_seed[ours]) & set(by_seed[rival]))
                    d = np.array([by_seed[ours][x] - by_seed[rival][x] for x in seeds])
                    if len(d) > 1 and d.mean() > 2.0 * d.std(ddof=1) / math.sqrt(len(d)):
                        behind.append(n)
            finite = [r for r in ratios if math.isfinite(r)]
            line = (
                f"{ours} below every Optuna sampler on {wins} of {len(names)} landscape instances "
                f"(behind the best of them by more than two standard errors of the paired "
                f"difference on {len(behind)}{': ' + ', '.join(behind) if behind else ''}); "
                f"mean ratio to the best Optuna sampler over families: "
                f"{np.mean(finite) if finite else math.nan:.2f}"
            )
            if "TPE" in samplers and ours != "TPE":
                line += (
                    f"; families where {ours} is worse than TPE by more than one standard error "
                    f"of the difference: {', '.join(behind_tpe) or 'none'}"
                )
            out.append(line + "\n")
    return "\n".join(out)


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
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 seeds, 3 families")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per sampler and landscape")
    parser.add_argument("--seed-offset", type=int, default=0, help="first seed")
    parser.add_argument("--n-trials", type=int, default=100, help="evaluations per run")
    parser.add_argument("--lam", type=float, default=0.002, help="lambda per million parameters")
    parser.add_argument(
        "--sigmas",
        type=float,
        nargs="*",
        default=[0.0, 0.01, 0.02, 0.03],
        help="noise SD of one evaluation's accuracy",
    )
    parser.add_argument("--families", nargs="*", default=list(PROFILES), help="synthetic families")
    parser.add_argument("--instances", type=int, default=3, help="instances per family")
    parser.add_argument("--instance-offset", type=int, default=0, help="first instance")
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
        help="only this training seed's rows of the table (default: the mean over seeds)",
    )
    parser.add_argument("--samplers", nargs="*", default=list(DEFAULT_SAMPLERS))
    parser.add_argument("--skip-synthetic", action="store_true", help="only the measured table")
    parser.add_argument("--skip-table", action="store_true", help="only synthetic landscapes")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--csv", type=Path, default=None, help="write every run's regret here")
    parser.add_argument(
        "--update",
        type=Path,
        default=None,
        help="CSV of stored runs (as --csv writes): this run's rows replace the stored rows of "
        "the same landscape, lambda, sigma, sampler and seed; the tables cover every sampler",
    )
    parser.add_argument(
        "--tables-from",
        type=Path,
        default=None,
        help="print the tables of the stored runs in this CSV (at --lam) and run nothing",
    )
    parser.add_argument("--overhead-only", action="store_true")
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--overhead-trials", type=int, default=5000)
    parser.add_argument("--overhead-asks", type=int, default=30)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    unknown = set(args.samplers) - set(SAMPLERS)
    if unknown:
        parser.error(f"unknown samplers {sorted(unknown)}; choose from {list(SAMPLERS)}")
    seeds = list(range(args.seed_offset, args.seed_offset + (3 if args.quick else args.seeds)))

    if args.tables_from:
        rows, samplers = from_stored(read_rows(args.tables_from), args.lam)
        n_seeds = len({r[3] for r in rows})
        print(f"## True regret of the named mask (lam = {args.lam}, {n_seeds} seeds)\n")
        print(markdown(rows, samplers, args.lam))
        return 0
    # A bad stored file fails before the run, not after it; a missing one is created.
    stored_rows = read_rows(args.update) if args.update and args.update.exists() else []
    if not args.overhead_only:
        families = ["top", "collapse", "plateau"] if args.quick else args.families
        instances = 1 if args.quick else args.instances
        specs: list[tuple] = []
        if not args.skip_synthetic:
            specs = [
                ("synthetic", f, i)
                for f in families
                for i in range(args.instance_offset, args.instance_offset + instances)
            ]
        if not args.skip_table:
            if args.table.exists():
                spec = ("table", str(args.table), args.table_min_accuracy, args.table_seed)
                try:
                    _landscape(spec)
                    specs.append(spec)
                except ValueError as error:  # Still being measured: some masks are missing.
                    print(f"incomplete table, skipped: {error}", file=sys.stderr)
            else:
                print(f"no measured table at {args.table}: skipped", file=sys.stderr)
        sigmas = [0.0, 0.02] if args.quick else args.sigmas
        n_trials = 50 if args.quick else args.n_trials
        rows = evaluate(specs, args.samplers, seeds, n_trials, args.lam, sigmas, args.jobs)
        samplers = args.samplers
        if args.csv:
            write_rows(args.csv, to_stored(rows, args.lam))
        if args.update:
            merged = merge_rows(stored_rows, rows, args.lam)
            write_rows(args.update, merged)
            rows, samplers = from_stored(merged, args.lam)
        print(f"## True regret of the named mask (lam = {args.lam}, {len(seeds)} seeds)\n")
        print(markdown(rows, samplers, args.lam))
    if not args.no_overhead:
        n_asks = 5 if args.quick else args.overhead_asks
        n_finished = 500 if args.quick else args.overhead_trials
        overhead_samplers = {k: SAMPLERS[k] for k in ("Random", "TPE", "NSGA-II", "AlphaNAS")}
        rows_o = measure_overhead(overhead_samplers, n_finished, 12, n_asks)
        print(f"## Ask overhead ({n_finished} finished trials, SQLite, 12 layers, {n_asks} asks)\n")
        print(markdown_overhead(rows_o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
