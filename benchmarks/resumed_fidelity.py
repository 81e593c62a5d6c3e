"""A study resumed with other training settings: does the answer follow the newest settings?

A search runs its first ``--before`` trials under "short" settings, whose accuracies are lower by
a shift, and is then resumed under the "long" (true) settings for ``--after`` more. The two arms
are the same study, same seeds and noise draws, and differ only in whether the trials name
their settings (user attribute ``fidelity``, as ``AlphaNASObjective`` records it):

* ``named``: the value model fits an offset per fidelity and estimates on the newest scale;
* ``unnamed``: every value is pooled as one measurement of the same thing (what a study whose
  objective records no fidelity gets, and what the sampler did before it read them).

The metric is the true regret (under the long settings) of the mask ``winner(study)`` names.
Shifts: ``uniform`` (every mask ``--shift`` lower under the short settings: what the offsets
assume) and ``depth`` (shallower masks lose more: ``--shift`` plus as much again times the
fraction of layers dropped, which an offset common to every mask cannot follow). A negative
``--shift`` makes the first settings the better ones (a study resumed with shorter training).

    python benchmarks/resumed_fidelity.py --seeds 110 139 --shift 0.03 --out resumed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _task(spec: tuple) -> tuple:
    family, instance, seed, shape, named, before, after, shift, lam, sigma = spec
    import optuna
    import sampler_regret as sr
    from landscapes import synthetic_landscape

    from alphanas_optuna import AlphaNASSampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    land = synthetic_landscape(family, instance)
    _, q_best, q_worst = land.optimum(lam, None, sr.MAX_PARAMS)
    noise = np.random.default_rng([seed, zlib.crc32(land.name.encode()), 7])
    study = optuna.create_study(direction="maximize", sampler=AlphaNASSampler(seed=seed))
    study.set_user_attr("alphanas_config", {"fitness": {"min_accuracy": land.min_accuracy}})

    def short(mask: str) -> float:
        dropped = mask.count("0") / land.n_layers
        return -shift * (1.0 + dropped) if shape == "depth" else -shift

    first = sr.make_objective(
        land, lam, sigma, noise, shift=short, fidelity="short" if named else None
    )
    study.optimize(first, n_trials=before)
    then = sr.make_objective(land, lam, sigma, noise, fidelity="long" if named else None)
    study.optimize(then, n_trials=after)
    mask = sr.named_mask(study, "AlphaNAS")
    if mask is None or not land.feasible(mask, None, sr.MAX_PARAMS):
        regret = q_best - q_worst
    else:
        regret = max(q_best - land.fitness(mask, lam), 0.0)
    return family, instance, seed, shape, named, regret


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--families", nargs="+", default=["top", "random", "collapse", "plateau"])
    p.add_argument("--instances", type=int, nargs=2, default=[100, 105], help="first last")
    p.add_argument("--seeds", type=int, nargs=2, default=[100, 109], help="first last")
    p.add_argument("--before", type=int, default=25)
    p.add_argument("--after", type=int, default=25)
    p.add_argument("--shift", type=float, default=0.03)
    p.add_argument("--lam", type=float, default=0.002)
    p.add_argument("--sigma", type=float, default=0.02)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    specs = [
        (f, i, s, shape, named, args.before, args.after, args.shift, args.lam, args.sigma)
        for f in args.families
        for i in range(args.instances[0], args.instances[1] + 1)
        for s in range(args.seeds[0], args.seeds[1] + 1)
        for shape in ("uniform", "depth")
        for named in (True, False)
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_task, specs, chunksize=4))
    Path(args.out).write_text(json.dumps(rows))
    print(f"{len(rows)} studies in {time.perf_counter() - start:.0f} s -> {args.out}")
    for shape in ("uniform", "depth"):
        paired = {}
        for f, i, s, sh, named, r in rows:
            if sh == shape:
                paired.setdefault((f, i, s), {})[named] = r
        d = np.array([v[True] - v[False] for v in paired.values()])
        base = np.mean([v[False] for v in paired.values()])
        new = np.mean([v[True] for v in paired.values()])
        print(
            f"{shape:8s} shift: unnamed {base:.4f} -> named {new:.4f}, paired change "
            f"{d.mean():+.4f} +- {d.std(ddof=1) / np.sqrt(len(d)):.4f} ({len(d)} studies)"
        )
        for fam in args.families:
            fd = np.array([v[True] - v[False] for k, v in paired.items() if k[0] == fam])
            fb = np.mean([v[False] for k, v in paired.items() if k[0] == fam])
            print(
                f"    {fam:9s} {fb:.4f} {fd.mean():+.4f} +- {fd.std(ddof=1) / np.sqrt(len(fd)):.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
