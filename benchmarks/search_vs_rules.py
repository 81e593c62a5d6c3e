"""The search against fixed layer-dropping rules, on the 63-mask MiniLM table and on the test split.

Part 1 (no training): for each depth k, the validation accuracy and Q of
- the search's best mask at depth k (from the study ``alphanas search`` wrote),
- the best mask at depth k in the full table (the optimum an exhaustive search would find),
- three rules: ``bottom`` keeps layers 0..k-1 (drops the top; the strongest simple rule of
  Sajjad et al. 2020, "Poor Man's BERT"), ``alternate`` keeps every (n/k)-th layer from the bottom
  (how DistilBERT and MiniLM-L6 were built from their teachers), ``symmetric`` keeps the bottom
  ceil(k/2) and the top floor(k/2) layers (drops the middle).

Part 2 (``--test``): the Table 1 analogue through ``alphanas_optuna.report.build_table1``: the
full model, the search's best mask, and the best rule at the same depth, each fine-tuned with the
study's ``[report]`` budget and evaluated on the IMDB test split with a 95% Wilson interval.

    alphanas search studies/minilm-imdb-evidence.toml --data ../shared/data/imdb \\
        --storage sqlite:///runs/evidence.db
    python benchmarks/search_vs_rules.py --storage sqlite:///runs/evidence.db --test
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
from collections import defaultdict
from pathlib import Path

import optuna

from alphanas_optuna.config import load_study_config
from alphanas_optuna.mask import format_mask


def rule_masks(n: int, k: int) -> dict[str, str]:
    bottom = [1 if i < k else 0 for i in range(n)]
    alternate = [0] * n
    for i in range(k):
        alternate[math.floor(i * n / k)] = 1
    symmetric = [0] * n
    for i in range(math.ceil(k / 2)):
        symmetric[i] = 1
    for i in range(k // 2):
        symmetric[n - 1 - i] = 1
    return {
        "bottom": format_mask(bottom),
        "alternate": format_mask(alternate),
        "symmetric": format_mask(symmetric),
    }


def load_table(path: Path, seed: int) -> dict[str, dict]:
    rows = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            if int(r["seed"]) == seed:
                rows[r["mask"]] = {
                    "accuracy": float(r["accuracy"]),
                    "n_params": int(r["n_params"]),
                }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-file", default="studies/minilm-imdb-evidence.toml")
    parser.add_argument("--storage", default="sqlite:///runs/evidence.db")
    parser.add_argument("--study-name", default=None)
    parser.add_argument("--table", default="benchmarks/data/minilm-l6-imdb.csv")
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--test", action="store_true", help="also run the Table 1 analogue")
    parser.add_argument(
        "--depth",
        type=int,
        default=None,
        help="with --test: also compare the search's best mask at this depth with the rules there "
        "(default: the depth of the search's best mask)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    config = load_study_config(args.study_file)
    config = config.replace(data=dataclasses.replace(config.data, source=args.data))
    fitness = config.fitness
    study_name = args.study_name or config.study_name
    table = load_table(Path(args.table), seed=config.training.seed)
    n = len(next(iter(table)))

    def q(accuracy: float, n_params: int) -> float:
        return fitness.quality(accuracy, n_params)

    def feasible(accuracy: float, n_params: int) -> bool:
        return accuracy >= fitness.min_accuracy and n_params <= fitness.max_params

    study = optuna.load_study(study_name=study_name, storage=args.storage)
    searched = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("accuracy") is not None and "pruned_at_step" not in t.user_attrs
    ]
    by_depth: dict[int, list] = defaultdict(list)
    for t in searched:
        by_depth[t.user_attrs["n_layers"]].append(t)

    lines = [
        f"Study `{study_name}`: {len(searched)} evaluated trials; table: {len(table)} masks "
        f"(seed {config.training.seed}); Q = A - {fitness.lambda_per_million:g} N/1e6, "
        f"feasible if A >= {fitness.min_accuracy}.",
        "",
        "| k | search best (mask, A, Q) | table optimum at k (mask, A, Q) | bottom (A, Q) | "
        "alternate (A, Q) | symmetric (A, Q) |",
        "|---:|---|---|---|---|---|",
    ]
    best_rule = (-math.inf, None, None)
    agree = []
    for k in range(1, n + 1):
        masks_k = {m: v for m, v in table.items() if m.count("1") == k}
        cells = []
        if by_depth.get(k):
            t = max(
                by_depth[k], key=lambda t: q(t.user_attrs["accuracy"], t.user_attrs["n_params"])
            )
            a, npar = t.user_attrs["accuracy"], t.user_attrs["n_params"]
            cells.append(f"`{t.user_attrs['mask']}` {a:.3f}, {q(a, npar):.4f}")
            for tt in by_depth[k]:
                m = tt.user_attrs["mask"]
                if m in table and tt.user_attrs.get("reused_from") is None:
                    agree.append(abs(tt.user_attrs["accuracy"] - table[m]["accuracy"]))
        else:
            cells.append("–")
        complete = len(masks_k) == math.comb(n, k)
        if masks_k:
            opt_mask = max(masks_k, key=lambda m: q(**masks_k[m]))
            opt = masks_k[opt_mask]
            partial = "" if complete else f" (of {len(masks_k)}/{math.comb(n, k)})"
            cells.append(f"`{opt_mask}` {opt['accuracy']:.3f}, {q(**opt):.4f}{partial}")
        else:
            cells.append("–")
        for name, mask in rule_masks(n, k).items():
            v = table.get(mask)
            if v is None:
                cells.append(f"`{mask}` –")
                continue
            cells.append(f"`{mask}` {v['accuracy']:.3f}, {q(**v):.4f}")
            if feasible(**v) and q(**v) > best_rule[0]:
                best_rule = (q(**v), name, mask)
        lines.append(f"| {k} | " + " | ".join(cells) + " |")

    feasible_searched = [
        t for t in searched if feasible(t.user_attrs["accuracy"], t.user_attrs["n_params"])
    ]
    best_search = max(
        feasible_searched,
        key=lambda t: q(t.user_attrs["accuracy"], t.user_attrs["n_params"]),
        default=None,
    )
    table_best = max(
        (m for m in table if feasible(**table[m])), key=lambda m: q(**table[m]), default=None
    )
    lines.append("")
    if best_search is not None:
        bq = q(best_search.user_attrs["accuracy"], best_search.user_attrs["n_params"])
        lines.append(
            f"Search's best feasible: `{best_search.user_attrs['mask']}` Q = {bq:.4f} "
            f"(trial {best_search.number}); best feasible rule: {best_rule[1]} "
            f"`{best_rule[2]}` Q = {best_rule[0]:.4f}; table optimum: `{table_best}` "
            f"Q = {q(**table[table_best]):.4f}"
            + ("." if len(table) == 2**n - 1 else f" (table has {len(table)} of {2**n - 1} masks).")
        )
        order = sorted(searched, key=lambda t: t.number)
        hit = next((i + 1 for i, t in enumerate(order) if t.user_attrs["mask"] == table_best), None)
        lines.append(
            f"The search evaluated the table optimum at evaluation {hit}."
            if hit
            else "The search did not evaluate the table optimum."
        )
    if agree:
        lines.append(
            f"Search trials vs the table at the same mask and seed: mean |ΔA| = "
            f"{sum(agree) / len(agree):.4f} over {len(agree)} masks (same data, order and "
            "hyper-parameters; the processes that made them drew different classification heads)."
        )
    text = "\n".join(lines)
    print(text, flush=True)

    if args.test and best_search is not None:
        from alphanas_optuna.report import build_table1

        depth = args.depth or best_search.user_attrs["n_layers"]
        rules = rule_masks(n, depth)
        known = [r for r in rules if rules[r] in table]
        # The best rule at this depth by the table; all three when the table lacks them.
        if len(known) == len(rules):
            chosen = [max(rules, key=lambda r: q(**table[rules[r]]))]
        else:
            chosen = list(rules)
        extra = []
        if args.depth:
            at_depth = max(
                by_depth[depth],
                key=lambda t: q(t.user_attrs["accuracy"], t.user_attrs["n_params"]),
            )
            extra.append(
                (
                    f"search's best at k={depth} (trial {at_depth.number})",
                    at_depth.user_attrs["mask"],
                )
            )
        seen = {best_search.user_attrs["mask"], *(m for _, m in extra)}
        for r in chosen:
            if rules[r] not in seen:
                extra.append((f"rule: {r} (k={depth})", rules[r]))
                seen.add(rules[r])
        result = build_table1(config, args.storage, study_name, extra_masks=extra)
        text += "\n\n" + result.markdown()
        print(result.markdown(), flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
