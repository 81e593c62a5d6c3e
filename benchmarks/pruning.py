"""Does a pruned study with a larger per-trial budget find a better confirmed winner than the
default (one evaluation per trial, no pruner) for the same training work?

Two arms per search seed, both `studies/quickstart.toml` (all-MiniLM-L6-v2, IMDB, lambda = 0.02
per million parameters) with that seed in `[sampler]`:

- ``default``: the study as shipped: each trial trains on 800 reviews and is evaluated once.
- ``pruned``: each trial may train on twice as many reviews (1,600), is evaluated 4 times on the
  way, and ``[pruner] name = "successive-halving"`` (reduction factor 2, first rung at the first
  evaluation) stops the trials whose Q = A - lambda*N is not in the best half at a rung.

The budget is the same training work: the pruned arm runs trials (one ``search`` call per
trial, resuming its study) until its work reaches the default arm's. Work is counted in examples,
``trained examples + scored validation examples / 3`` (a forward pass is about a third of a
training step), so that it does not depend on how busy the machine is; seconds are reported too.

Then each arm's study is confirmed exactly as a user would (``alphanas confirm``: the top 2 masks
by the study's estimates, 2 seeds each, at the `[report]` budget of 2,000 reviews, on the
validation split) and its answer is ``winner(study)``. Two measures of that answer:

- ``confirmed_q``: the mean Q of the answer's confirmation runs (validation, 500 reviews each);
- ``table_q``: the answer's Q in `benchmarks/data/minilm-l6-imdb.csv` (63 masks measured
  independently at 1,000 training and 1,000 validation reviews; mean over its seeds), a measure
  that the search's own noise cannot flatter.

Every arm and seed is a row of `benchmarks/data/pruning-minilm-imdb.csv`::

    python benchmarks/pruning.py run --seeds 0 1 2 --data ../shared/data/imdb
    python benchmarks/pruning.py collect

No test split is read.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alphanas_optuna.config import StudyConfig, load_study_config  # noqa: E402
from alphanas_optuna.intervals import t_interval  # noqa: E402

STUDY = ROOT / "studies" / "quickstart.toml"
TABLE = ROOT / "benchmarks" / "data" / "minilm-l6-imdb.csv"
RUNS = ROOT / "runs"
OUT_CSV = ROOT / "benchmarks" / "data" / "pruning-minilm-imdb.csv"
FIELDS = [
    "arm",
    "search_seed",
    "trials",
    "pruned_by_pruner",
    "work_examples",
    "trial_seconds",
    "search_answer",
    "answer",
    "confirmed_q",
    "confirm_runs",
    "table_q",
]
EVALUATIONS = 4
EVAL_WEIGHT = 1 / 3


def arm_config(arm: str, seed: int, data: str | None) -> StudyConfig:
    config = load_study_config(STUDY)
    config = config.replace(
        sampler={**config.sampler, "seed": seed},
        confirm=dataclasses.replace(config.confirm, top=2, seeds=2),
    )
    if data:
        config = config.replace(data=dataclasses.replace(config.data, source=data))
    if arm == "pruned":
        train_size = 2 * config.data.train_size
        steps = math.ceil(train_size / config.training.batch_size)
        config = config.replace(
            data=dataclasses.replace(config.data, train_size=train_size),
            training=dataclasses.replace(config.training, evaluations=EVALUATIONS),
            pruner={
                "name": "successive-halving",
                "min_resource": steps // EVALUATIONS,
                "reduction_factor": 2,
            },
        )
    return config


def work(study, config: StudyConfig) -> tuple[float, float, int, int]:
    """(examples of work, trial seconds, trials, trials stopped by the pruner) of a study's search
    trials. A trial answered from an earlier one (``reused_from``) did no work."""
    from alphanas_optuna.record import TrialRecord
    from alphanas_optuna.sampler.digest import CONFIRMATION_KEY

    batch = config.training.batch_size
    steps = math.ceil(config.data.train_size / batch)
    per_eval = config.data.validation_size * EVAL_WEIGHT
    eval_every = max(1, steps // config.training.evaluations)
    examples = seconds = 0.0
    n = stopped = 0
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.read(t)
        if CONFIRMATION_KEY in t.system_attrs or record is None or record.accuracy is None:
            continue
        n += 1
        if record.reused_from is not None:
            continue
        if record.pruned_at_step is not None:  # stopped by the pruner at this step
            done, evals = record.pruned_at_step, max(1, record.pruned_at_step // eval_every)
            stopped += 1
        else:
            done, evals = steps, config.training.evaluations
        examples += done * batch + evals * per_eval
        seconds += float(record.train_seconds or 0.0)
    return examples, seconds, n, stopped


def table_quality(lam: float) -> dict[str, float]:
    by_mask: dict[str, list[float]] = defaultdict(list)
    with TABLE.open() as f:
        for r in csv.DictReader(f):
            by_mask[r["mask"]].append(float(r["accuracy"]) - lam * float(r["n_params"]) / 1e6)
    return {m: sum(v) / len(v) for m, v in by_mask.items()}


def run_arm(arm: str, seed: int, data: str | None, budget: float | None) -> dict:
    import optuna

    from alphanas_optuna.answer import winner
    from alphanas_optuna.confirm import confirm, confirmed, fidelity
    from alphanas_optuna.search import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = arm_config(arm, seed, data)
    RUNS.mkdir(exist_ok=True)
    name = f"pruning-{arm}-{seed}"
    storage = f"sqlite:///{RUNS / (name + '.db')}"
    quiet = io.StringIO()
    if budget is None:
        search(config, storage=storage, study_name=name, progress=False)
    else:
        # One trial at a time (a rerun resumes the study) until the work reaches the budget.
        n = 0
        while True:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
                examples = work(study, config)[0]
                n = len(study.trials)
            except KeyError:
                examples = 0.0
            if examples >= budget:
                break
            n += 1
            search(config, storage=storage, study_name=name, n_trials=n, progress=False)
    study = optuna.load_study(study_name=name, storage=storage)
    examples, seconds, trials, stopped = work(study, config)
    search_answer = winner(study).mask
    confirm(config, storage, name, out=quiet)
    study = optuna.load_study(study_name=name, storage=storage)
    answer = winner(study)
    runs = [c for c in confirmed(study, fidelity(config)) if c.mask == answer.mask]
    qualities = list(runs[0].qualities) if runs else []
    table = table_quality(config.fitness.lambda_per_million)
    row = {
        "arm": arm,
        "search_seed": seed,
        "trials": trials,
        "pruned_by_pruner": stopped,
        "work_examples": round(examples),
        "trial_seconds": round(seconds, 1),
        "search_answer": search_answer,
        "answer": answer.mask,
        "confirmed_q": f"{sum(qualities) / len(qualities):.5f}" if qualities else "",
        "confirm_runs": len(qualities),
        "table_q": f"{table[answer.mask]:.5f}" if answer.mask in table else "",
    }
    print(row, flush=True)
    return row


def phase_run(seeds: list[int], data: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    done = set()
    if OUT_CSV.exists():
        with OUT_CSV.open() as f:
            done = {(r["arm"], int(r["search_seed"])) for r in csv.DictReader(f)}
    for seed in seeds:
        default = None
        for arm in ("default", "pruned"):
            if (arm, seed) in done:
                continue
            if arm == "pruned":
                import optuna

                cfg = arm_config("default", seed, data)
                study = optuna.load_study(
                    study_name=f"pruning-default-{seed}",
                    storage=f"sqlite:///{RUNS / f'pruning-default-{seed}.db'}",
                )
                default = work(study, cfg)[0]
            start = time.time()
            row = run_arm(arm, seed, data, default)
            print(f"{arm} seed {seed}: {time.time() - start:.0f} s", flush=True)
            new = not OUT_CSV.exists()
            with OUT_CSV.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)


def phase_collect() -> None:
    with OUT_CSV.open() as f:
        rows = list(csv.DictReader(f))
    lam = load_study_config(STUDY).fitness.lambda_per_million
    best = max(table_quality(lam).values())
    print("| arm | seeds | answers | work (examples) | confirmed Q | table regret |")
    print("|---|---:|---|---:|---:|---:|")
    by_arm = defaultdict(list)
    for r in rows:
        by_arm[r["arm"]].append(r)
    for arm, sub in by_arm.items():
        q = [float(r["confirmed_q"]) for r in sub if r["confirmed_q"]]
        regret = [best - float(r["table_q"]) for r in sub if r["table_q"]]
        cq = t_interval(q)
        rg = t_interval(regret)
        answers = ", ".join(f"`{r['answer']}`" for r in sub)
        w = sum(float(r["work_examples"]) for r in sub) / len(sub)
        print(
            f"| {arm} | {len(sub)} | {answers} | {w:,.0f} | {cq[0]:.4f} [{cq[1]:.4f}, {cq[2]:.4f}] "
            f"| {rg[0]:.4f} [{rg[1]:.4f}, {rg[2]:.4f}] |"
        )
    paired = defaultdict(dict)
    for r in rows:
        if r["table_q"]:
            paired[r["search_seed"]][r["arm"]] = float(r["table_q"])
    diffs = [v["pruned"] - v["default"] for v in paired.values() if len(v) == 2]
    if diffs:
        d = t_interval(diffs)
        print(
            f"\npruned - default, table Q, paired by seed: {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=["run", "collect"])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--data", default=None, help="local IMDB folder (train/test parquet)")
    args = parser.parse_args(argv)
    if args.phase == "run":
        phase_run(args.seeds, args.data)
    else:
        phase_collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
