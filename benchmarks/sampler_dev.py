"""Paired comparisons of sampler code on the development landscapes (never the reported ones).

``sampler_regret.py`` reports on instances 0–2 and seeds 0–19; designs are chosen on instances
≥ 100 and seeds ≥ 100 with this script, and checked on fresh instances and variations (other
depths, accuracies, floors, λ, σ) before anything is adopted. Each run is one study with the real
objective's contract (``sampler_regret.make_objective``), scored by the true regret of the mask
the sampler names (``sampler_regret.named_mask``) after 25, 50 and 100 trials; the noise draws
depend only on the landscape, seed and σ, so two runs of the same set are paired.

    # the development sets (instances 100-117 of the 7 families, seeds 100-119), this checkout:
    python benchmarks/sampler_dev.py run --out new.json
    # the same with the sampler of another commit (a checkout of it, e.g. a git worktree):
    git worktree add /tmp/base 61abcd5
    python benchmarks/sampler_dev.py run --code /tmp/base --out base.json
    # paired change of the mean regret, overall and per family:
    python benchmarks/sampler_dev.py compare base.json new.json
    # fresh instances, an 8-layer variation, the MiniLM table, Optuna's samplers:
    python benchmarks/sampler_dev.py run --instances 118-135 --seeds 160-169 --out fresh.json
    python benchmarks/sampler_dev.py run --n-layers 8 --families collapse plateau --out n8.json
    python benchmarks/sampler_dev.py run --families table --seeds 1000-1199 --out table.json
    python benchmarks/sampler_dev.py run --samplers Random TPE --out optuna.json
    # fine-tunes that collapse to the majority class on 10% of evaluations, whatever the mask:
    python benchmarks/sampler_dev.py run --collapse-rate 0.1 --samplers Random TPE AlphaNAS \
        --instances 200-201 --seeds 300-319 --out collapse.json
    # per instance: is AlphaNAS below every other sampler in the files?
    python benchmarks/sampler_dev.py instances new.json optuna.json

With ``--jobs 2`` on 2 cores, set ``OMP_NUM_THREADS=1`` (one BLAS thread per worker); the 2,520
development studies of one sampler then take about 3 minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def parse_range(text: str) -> list[int]:
    """``"100-117"`` or ``"5"`` as a list of integers."""
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def _task(spec: tuple) -> tuple:
    """One study; returns ``(family, instance, sampler, seed, {trials: (regret, pruned)})``."""
    code, family, instance, sampler, seed, n_trials, lam, sigma = spec[:8]
    n_layers, full_acc, floor, collapse_rate = spec[8:]
    # The sampler under test comes from ``code`` (a checkout); the harness from this directory.
    for path in (str(HERE), str(code) if code else None):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    # Imported first, from ``code``: sampler_regret puts this checkout at the front of the path.
    importlib.import_module("alphanas_optuna")
    import optuna
    import sampler_regret as sr
    from landscapes import synthetic_landscape, table_landscape

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if family == "table":
        land = table_landscape(sr.DEFAULT_TABLE, min_accuracy=0.70)
    else:
        land = synthetic_landscape(family, instance, n_layers=n_layers, full_accuracy=full_acc)
    if floor is not None:
        land.min_accuracy = floor
    pruned: dict[int, int] = {}
    regret = sr.run_once(
        land, sampler, seed, n_trials, lam, sigma, pruned=pruned, collapse_rate=collapse_rate
    )
    result = {k: (regret[k], pruned[k]) for k in regret}
    return family, instance, sampler, seed, result


def run(args: argparse.Namespace) -> None:
    specs = []
    for family in args.families:
        for instance in [0] if family == "table" else args.instances:
            for sampler in args.samplers:
                for seed in args.seeds:
                    specs.append(
                        (
                            args.code,
                            family,
                            instance,
                            sampler,
                            seed,
                            args.trials,
                            args.lam,
                            args.sigma,
                            args.n_layers,
                            args.full_accuracy,
                            args.min_accuracy,
                            args.collapse_rate,
                        )
                    )
    run_studies(_task, specs, args.jobs, args.out)


def run_studies(task: Callable[[tuple], tuple], specs: list[tuple], jobs: int, out: str) -> None:
    """Run ``task`` on every spec in ``jobs`` processes and store the rows ``(family, instance,
    sampler, seed, {trials: result})`` it returns as JSON in ``out``."""
    start = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(task, specs, chunksize=4))
    with open(out, "w") as f:
        json.dump(
            [[fa, i, sa, se, {str(k): v for k, v in r.items()}] for fa, i, sa, se, r in rows], f
        )
    print(f"{len(rows)} studies in {time.perf_counter() - start:.0f} s -> {out}")


def _load(path: str) -> list:
    with open(path) as f:
        return json.load(f)


def _se(values: np.ndarray) -> float:
    """Standard error of the mean (NaN for fewer than two values)."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def compare(args: argparse.Namespace) -> None:
    """Paired change of the mean regret from ``base`` to ``new`` (studies of the same family,
    instance and seed; the sampler named ``--sampler`` in each file)."""
    base = {(r[0], r[1], r[3]): r[4] for r in _load(args.base) if r[2] == args.sampler}
    new = {(r[0], r[1], r[3]): r[4] for r in _load(args.new) if r[2] == args.sampler}
    common = sorted(set(base) & set(new))
    for k in args.at:
        pairs = [
            (base[c][k][0], new[c][k][0], c[0]) for c in common if k in base[c] and k in new[c]
        ]
        if not pairs:
            continue
        a = np.array([p[0] for p in pairs])
        b = np.array([p[1] for p in pairs])
        d = b - a
        se = _se(d)
        print(
            f"after {k} trials, {len(d)} paired studies: {a.mean():.5f} -> {b.mean():.5f}, "
            f"change {100 * d.mean() / a.mean():+.1f}% +- {100 * se / a.mean():.1f}%"
        )
        for family in sorted({p[2] for p in pairs}):
            sel = np.array([p[2] == family for p in pairs])
            print(
                f"    {family:10s} {a[sel].mean():.4f} -> {b[sel].mean():.4f} "
                f"({d[sel].mean():+.4f} +- {_se(d[sel]):.4f})"
            )


def instances(args: argparse.Namespace) -> None:
    """Per instance, the mean regret of ``--sampler`` against every other sampler in the files;
    for each instance lost, the difference from the best rival there, paired by seed (the noise
    draws depend only on the landscape, seed and sigma), +- its standard error."""
    regret: dict[tuple, dict[int, float]] = defaultdict(dict)
    for path in args.files:
        for family, instance, sampler, seed, result in _load(path):
            if args.at in result:
                regret[(family, instance, sampler)][seed] = result[args.at][0]
    keys = sorted({(f, i) for f, i, _ in regret})
    others = sorted({s for _, _, s in regret} - {args.sampler})
    lost = []
    behind = 0
    for family, instance in keys:
        ours = regret[(family, instance, args.sampler)]
        means = {s: float(np.mean(list(regret[(family, instance, s)].values()))) for s in others}
        means = {s: m for s, m in means.items() if not np.isnan(m)}
        if not means or np.mean(list(ours.values())) < min(means.values()):
            continue
        rival = min(means, key=means.__getitem__)
        theirs = regret[(family, instance, rival)]
        seeds = sorted(set(ours) & set(theirs))
        d = np.array([ours[s] - theirs[s] for s in seeds])
        se = _se(d)
        behind += bool(d.mean() > 2.0 * se)
        lost.append(
            f"{family}-{instance}: {np.mean(list(ours.values())):.4f} against "
            f"{ {s: round(m, 4) for s, m in means.items()} }; "
            f"{d.mean():+.4f} +- {se:.4f} from {rival} over {len(d)} seeds"
        )
    print(f"{args.sampler} below every other sampler on {len(keys) - len(lost)} of {len(keys)}")
    for line in lost:
        print("  lost", line)
    if lost:
        print(f"  behind the best rival by more than two standard errors on {behind} of them")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="run studies and store their regrets")
    r.add_argument("--out", required=True, help="JSON file of the runs")
    r.add_argument(
        "--families",
        nargs="+",
        default=["top", "middle", "random", "bottom", "collapse", "distant", "plateau"],
        help="synthetic families, or 'table' for the measured MiniLM table",
    )
    r.add_argument(
        "--instances", type=parse_range, default=parse_range("100-117"), help="e.g. 100-117"
    )
    r.add_argument("--seeds", type=parse_range, default=parse_range("100-119"), help="e.g. 100-119")
    r.add_argument("--samplers", nargs="+", default=["AlphaNAS"])
    r.add_argument("--sigma", type=float, default=0.02, help="noise SD of one evaluation")
    r.add_argument("--lam", type=float, default=0.002, help="lambda per million parameters")
    r.add_argument("--trials", type=int, default=50)
    r.add_argument("--n-layers", type=int, default=12)
    r.add_argument("--full-accuracy", type=float, default=0.93)
    r.add_argument("--min-accuracy", type=float, default=None, help="floor (default 0.75)")
    r.add_argument(
        "--collapse-rate",
        type=float,
        default=0.0,
        help="chance that an evaluation collapses to the majority class (A_obs = 0.5)",
    )
    r.add_argument("--code", type=Path, default=None, help="checkout whose sampler is run")
    r.add_argument("--jobs", type=int, default=2)
    c = commands.add_parser("compare", help="paired change from one run file to another")
    c.add_argument("base")
    c.add_argument("new")
    c.add_argument("--at", nargs="+", default=["25", "50"], help="checkpoints (trials)")
    c.add_argument("--sampler", default="AlphaNAS")
    i = commands.add_parser("instances", help="instances won against the other samplers")
    i.add_argument("files", nargs="+")
    i.add_argument("--at", default="50", help="checkpoint (trials)")
    i.add_argument("--sampler", default="AlphaNAS")
    args = parser.parse_args(argv)
    {"run": run, "compare": compare, "instances": instances}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
