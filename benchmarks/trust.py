"""End-to-end evidence: does the search's confirmed answer beat picking layers by a rule?

For each search seed: a two-objective ``alphanas search`` of ``studies/minilm-imdb-trust.toml``
(every depth at once), then ``alphanas confirm`` of the two best masks of each depth k (by the
search's estimates), two seeds each, on the validation split; the confirmed winner at k is the
one with the best mean validation accuracy. Then every confirmed winner and the three rules at
each k (keep the bottom k; evenly spaced, as DistilBERT; symmetric: bottom and top) get the same
final fine-tune (``[report]`` budget: 2,000 training reviews) with several final seeds and are
tested on 5,000 IMDB test reviews. The test split is touched only by that last step.

Every final run is a row of ``benchmarks/data/trust-minilm-imdb.csv`` (columns
``k,mask,kind,search_seed,final_seed,test_accuracy,test_n``). Phases, so that two processes can
share the two cores::

    python benchmarks/trust.py search --seed 0 --data ../shared/data/imdb     # one per seed
    python benchmarks/trust.py final --shard 0/2 --seeds 0 1 2 --data ../shared/data/imdb
    python benchmarks/trust.py collect --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from search_vs_rules import rule_masks  # noqa: E402

from alphanas_optuna.config import StudyConfig, load_study_config  # noqa: E402
from alphanas_optuna.intervals import t_interval  # noqa: E402

STUDY = ROOT / "studies" / "minilm-imdb-trust.toml"
RUNS = ROOT / "runs"
OUT_CSV = ROOT / "benchmarks" / "data" / "trust-minilm-imdb.csv"
DEPTHS = (2, 3, 4)
FINAL_SEEDS = (0, 1, 2)


def config_for(seed: int, data: str | None) -> StudyConfig:
    config = load_study_config(STUDY)
    if data:
        config = config.replace(data=dataclasses.replace(config.data, source=data))
    return config.replace(sampler={**config.sampler, "seed": seed})


def storage_for(seed: int) -> tuple[str, str]:
    RUNS.mkdir(exist_ok=True)
    return f"sqlite:///{RUNS / f'trust-{seed}.db'}", f"trust-{seed}"


def phase_search(seed: int, data: str | None) -> None:
    """The search and the confirmation of one search seed; its winners go to a JSON file."""
    import numpy as np
    import optuna
    import torch

    from alphanas_optuna.answer import estimates_of
    from alphanas_optuna.confirm import confirm
    from alphanas_optuna.search import search

    torch.set_num_threads(1)
    config = config_for(seed, data)
    storage, name = storage_for(seed)
    start = time.process_time()
    search(config, storage=storage, study_name=name)
    search_cpu = time.process_time() - start
    study = optuna.load_study(study_name=name, storage=storage)
    masks, means = estimates_of(study)
    chosen: dict[int, list[str]] = {}
    measured = _measured_accuracy(study)
    for k in DEPTHS:
        at_k = [(m, v) for m, v in zip(masks, means, strict=True) if m.count("1") == k]
        if not at_k:
            # No mask of this depth was feasible in the search (MiniLM's shallow sub-models often
            # collapse): its choice is then the depth's best measured accuracy.
            at_k = [(m, a) for m, a in measured.items() if m.count("1") == k]
        at_k.sort(key=lambda mv: -mv[1])
        chosen[k] = [m for m, _ in at_k[: config.confirm.top]]
    start = time.process_time()
    winners = {}
    for k in DEPTHS:
        if not chosen[k]:
            continue
        ranking = confirm(config, storage, name, masks=chosen[k])
        best = max(ranking, key=lambda c: np.mean(c.accuracies))
        winners[k] = {
            "mask": best.mask,
            "validation": list(best.accuracies),
            "candidates": chosen[k],
        }
    confirm_cpu = time.process_time() - start
    search_cpu, confirm_cpu = training_seconds(seed)
    out = RUNS / f"trust-{seed}-winners.json"
    out.write_text(
        json.dumps(
            {
                "seed": seed,
                "winners": winners,
                "search_cpu_seconds": search_cpu,
                "confirm_cpu_seconds": confirm_cpu,
            },
            indent=1,
        )
    )
    print(f"search seed {seed}: {winners} -> {out}")


def training_seconds(seed: int) -> tuple[float, float]:
    """What a search seed's search and its confirmation cost over every run (a resumed phase's
    own process time misses what earlier runs did): their trials' training seconds."""
    import optuna

    from alphanas_optuna.sampler.digest import CONFIRMATION_KEY

    storage, name = storage_for(seed)
    study = optuna.load_study(study_name=name, storage=storage)
    search = confirm = 0.0
    for t in study.get_trials(deepcopy=False):
        seconds = float(t.user_attrs.get("train_seconds") or 0.0)
        if CONFIRMATION_KEY in t.system_attrs:
            confirm += seconds
        else:
            search += seconds
    return search, confirm


def _measured_accuracy(study) -> dict[str, float]:
    """Mean validation accuracy of every mask the search trained (feasible or not)."""
    from alphanas_optuna.record import TrialRecord
    from alphanas_optuna.sampler.digest import CONFIRMATION_KEY

    by_mask: dict[str, list[float]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.read(t)
        if CONFIRMATION_KEY in t.system_attrs or record is None or record.accuracy is None:
            continue
        if record.pruned_at_step is None:
            by_mask[record.mask].append(float(record.accuracy))
    return {m: sum(v) / len(v) for m, v in by_mask.items()}


def final_plan(seeds: list[int]) -> list[dict]:
    """Every final row: (k, mask, kind, search_seed) x final seed."""
    n = 6
    rows = []
    for k in DEPTHS:
        for kind, mask in rule_masks(n, k).items():
            for f in FINAL_SEEDS:
                rows.append(
                    {"k": k, "mask": mask, "kind": kind, "search_seed": "", "final_seed": f}
                )
        for s in seeds:
            path = RUNS / f"trust-{s}-winners.json"
            if not path.exists():  # that search is not done yet: its rows come later
                continue
            info = json.loads(path.read_text())
            w = info["winners"].get(str(k))
            if w is None:
                continue
            for f in FINAL_SEEDS:
                rows.append(
                    {"k": k, "mask": w["mask"], "kind": "winner", "search_seed": s, "final_seed": f}
                )
    return rows


def phase_final(seeds: list[int], shard: tuple[int, int], data: str | None) -> None:
    """Final fine-tune + test of this shard's distinct (mask, final seed) runs."""
    import torch

    from alphanas_optuna.final import (
        evaluate_test,
        final_fine_tune,
        final_training_config,
        report_data_config,
    )
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.task import load_task

    torch.set_num_threads(1)
    config = config_for(0, data)
    runs = sorted({(r["mask"], r["final_seed"]) for r in final_plan(seeds)})
    mine = [r for i, r in enumerate(runs) if i % shard[1] == shard[0]]
    out = RUNS / f"trust-final-{shard[0]}.csv"
    done = set()
    for path in RUNS.glob("trust-final-*.csv"):  # every shard's: the plan grows as searches end
        with path.open() as f:
            done |= {(r["mask"], int(r["final_seed"])) for r in csv.DictReader(f)}
    todo = [r for r in mine if r not in done]
    print(f"shard {shard}: {len(mine)} runs, {len(todo)} to do", flush=True)
    if not todo:
        return
    data_config = report_data_config(config)
    accelerator = get_accelerator(config.training.mixed_precision)
    by_seed = defaultdict(list)
    for mask, seed in todo:
        by_seed[seed].append(mask)
    new = not out.exists()
    with out.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["mask", "final_seed", "test_accuracy", "test_n", "train_seconds"])
        for seed, masks in sorted(by_seed.items()):
            training = dataclasses.replace(final_training_config(config), seed=seed)
            task = load_task(
                config.model.name,
                data_config,
                num_labels=config.model.num_labels,
                seed=seed,
                splits=("train", "validation", "test"),
            )
            for mask in masks:
                model, result = final_fine_tune(
                    task.model,
                    mask,
                    task.tokenized["train"],
                    task.tokenized["validation"],
                    training,
                    accelerator,
                    pad_token_id=task.pad_token_id,
                )
                test = evaluate_test(
                    model,
                    task.tokenized["test"],
                    accelerator,
                    pad_token_id=task.pad_token_id,
                    batch_size=config.training.eval_batch_size,
                )
                writer.writerow(
                    [mask, seed, f"{test.accuracy:.5f}", test.n, f"{result.seconds:.1f}"]
                )
                f.flush()
                print(
                    f"{mask} seed {seed}: test {test.accuracy:.4f} ({result.seconds:.0f} s)",
                    flush=True,
                )
                del model


def phase_collect(seeds: list[int]) -> None:
    results = {}
    seconds = {}
    for path in sorted(RUNS.glob("trust-final-*.csv")):
        with path.open() as f:
            for r in csv.DictReader(f):
                key = (r["mask"], int(r["final_seed"]))
                results[key] = (float(r["test_accuracy"]), int(r["test_n"]))
                seconds[key] = float(r["train_seconds"])
    plan = final_plan(seeds)
    missing = [r for r in plan if (r["mask"], r["final_seed"]) not in results]
    if missing:
        print(f"{len(missing)} final runs missing, e.g. {missing[:2]}", file=sys.stderr)
    rows = []
    for r in plan:
        key = (r["mask"], r["final_seed"])
        if key in results:
            acc, n = results[key]
            rows.append({**r, "test_accuracy": f"{acc:.5f}", "test_n": n})
    with OUT_CSV.open("w", newline="") as f:
        writer = csv.DictWriter(
            f,
            fieldnames=[
                "k",
                "mask",
                "kind",
                "search_seed",
                "final_seed",
                "test_accuracy",
                "test_n",
            ],
        )
        writer.writeheader()
        writer.writerows(rows)
    cpu = []
    for s in seeds:
        if (RUNS / f"trust-{s}.db").exists():
            search, confirm = training_seconds(s)
            print(f"search seed {s}: search {search:.0f} s + confirm {confirm:.0f} s of training")
            cpu.append(search + confirm)
    rule_seconds = [seconds[k] for k in seconds]
    print(f"Rows: {OUT_CSV} ({len(rows)} runs)\n")
    for k in DEPTHS:
        print(
            f"**k = {k}** (mean test accuracy over runs, 95% t-interval; n = test reviews per run)\n"
        )
        print("| kind | mask(s) | runs | mean test accuracy | 95% CI |")
        print("|---|---|---:|---:|:---:|")
        for kind in ("winner", "bottom", "alternate", "symmetric"):
            sub = [r for r in rows if r["k"] == k and r["kind"] == kind]
            if not sub:
                continue
            mean, low, high = t_interval([float(r["test_accuracy"]) for r in sub])
            masks = ", ".join(sorted({f"`{r['mask']}`" for r in sub}))
            ci = f"[{low:.4f}, {high:.4f}]" if math.isfinite(low) else "–"
            print(f"| {kind} | {masks} | {len(sub)} | {mean:.4f} | {ci} |")
        print()
    print("Do the search seeds agree? Each seed's winner over its final seeds:\n")
    print("| k | search seed | mask | runs | mean test accuracy | 95% CI |")
    print("|---:|---:|---|---:|---:|:---:|")
    for k in DEPTHS:
        spans = []
        for s in seeds:
            sub = [
                r for r in rows if r["k"] == k and r["kind"] == "winner" and r["search_seed"] == s
            ]
            if not sub:
                continue
            mean, low, high = t_interval([float(r["test_accuracy"]) for r in sub])
            spans.append((low, high))
            ci = f"[{low:.4f}, {high:.4f}]" if math.isfinite(low) else "–"
            print(f"| {k} | {s} | `{sub[0]['mask']}` | {len(sub)} | {mean:.4f} | {ci} |")
        if len(spans) > 1 and all(math.isfinite(a) for a, _ in spans):
            overlap = max(a for a, _ in spans) <= min(b for _, b in spans)
            print(f"| {k} | | all intervals share a point: {'yes' if overlap else 'no'} | | | |")
    print()
    if cpu and rule_seconds:
        print(
            f"Training seconds of search + confirm per search seed: {sum(cpu) / len(cpu):.0f} s (mean of "
            f"{len(cpu)}); one final fine-tune: {sum(rule_seconds) / len(rule_seconds):.0f} s "
            "(mean, training only)."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=["search", "final", "collect"])
    parser.add_argument("--seed", type=int, default=0, help="search seed (phase search)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="search seeds")
    parser.add_argument("--shard", default="0/1", help="i/N: this process's share (phase final)")
    parser.add_argument("--data", default=None, help="local IMDB folder (train/test parquet)")
    args = parser.parse_args(argv)
    if args.phase == "search":
        phase_search(args.seed, args.data)
    elif args.phase == "final":
        i, n = (int(x) for x in args.shard.split("/"))
        phase_final(args.seeds, (i, n), args.data)
    else:
        phase_collect(args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
