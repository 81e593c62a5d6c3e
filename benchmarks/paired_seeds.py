"""Paired seeds of ``trial_cost.py``: the objective against the Trainer, seed by seed.

Each seed's pair shares the new head and the random batch order (common random numbers), so the
accuracy difference is measured per seed and summarised with a paired t-interval; equivalence
within ``--margin`` points is shown when the 90% interval lies inside it (two one-sided tests at
5% each, TOST). Time is the geometric mean of per-seed ratios over the seeds marked clean (run
with nothing else on the machine but the other benchmark process).

    python benchmarks/paired_seeds.py                          # summarise the stored runs
    python benchmarks/paired_seeds.py --add out/seed8.md ...   # store trial_cost.py --out files

Rows live in ``benchmarks/data/trial-cost-512.csv`` (seed, objective, seconds, accuracy, clean).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

DEFAULT_CSV = Path(__file__).parent / "data" / "trial-cost-512.csv"
FIELDS = ("seed", "objective", "seconds", "accuracy", "clean")
ROW = re.compile(r"^\| `[01]+` \| \d+ \| (?P<name>[^|]+?) \| (?P<s>[\d.]+) \| (?P<a>[\d.]+) \|")
SEED = re.compile(r"\bseed (\d+)\b")


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    lo, hi = -100.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _t_cdf(x: float, df: int) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + x * x))
    return 1 - tail if x >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Lentz's method)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    )
    tiny = 1e-300
    f = c = 1.0
    d = 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1 - c * d) < 1e-15:
            break
    return front * (f - 1) / a


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, tuple, float]:
    """The median and the order-statistic interval that covers it with at least ``level``
    (the sign test's interval: no assumption about the shape of the distribution)."""
    x = sorted(values)
    n = len(x)
    mid = n // 2
    median = x[mid] if n % 2 else (x[mid - 1] + x[mid]) / 2
    below = [math.comb(n, i) / 2**n for i in range(n + 1)]
    k, coverage = 0, 1.0  # the widest interval, [min, max]
    for j in range(1, mid + 1):  # interval [x_(j), x_(n-j+1)] (1-based)
        cov = 1 - 2 * sum(below[:j])
        if cov < level:
            break
        k, coverage = j - 1, cov
    return median, (x[k], x[n - 1 - k]), coverage


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def parse_trial_cost(text: str, *, source: str) -> list[dict[str, str]]:
    """The rows of one ``trial_cost.py --out`` file, with the seed from its header line."""
    seed = SEED.search(text)
    if seed is None:
        raise ValueError(f"{source}: no 'seed N' in the header; is it a trial_cost.py --out file?")
    rows = [
        {"seed": seed.group(1), "objective": m["name"], "seconds": m["s"], "accuracy": m["a"]}
        for m in map(ROW.match, text.splitlines())
        if m
    ]
    if not rows:
        raise ValueError(f"{source}: no result rows")
    return rows


def summarise(rows: list[dict[str, str]], ours: str, base: str, margin: float) -> str:
    by_seed: dict[int, dict[str, dict[str, str]]] = {}
    for row in rows:
        by_seed.setdefault(int(row["seed"]), {})[row["objective"]] = row
    seeds = sorted(s for s, r in by_seed.items() if ours in r and base in r)
    if len(seeds) < 2:
        raise SystemExit(f"need at least two seeds with both {ours!r} and {base!r}; have {seeds}")
    lines = [
        f"| seed | `{base}` s | `{ours}` s | time ratio | `{base}` acc. | `{ours}` acc. | Δ (points) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    diffs, ratios, acc_o, acc_b = [], [], [], []
    for s in seeds:
        o, b = by_seed[s][ours], by_seed[s][base]
        clean = o.get("clean", "1") == "1" and b.get("clean", "1") == "1"
        ratio = float(o["seconds"]) / float(b["seconds"])
        if clean:
            ratios.append(ratio)
        d = 100 * (float(o["accuracy"]) - float(b["accuracy"]))
        diffs.append(d)
        acc_o.append(float(o["accuracy"]))
        acc_b.append(float(b["accuracy"]))
        mark = "" if clean else " (not clean)"
        lines.append(
            f"| {s} | {float(b['seconds']):.0f} | {float(o['seconds']):.0f} | {ratio:.2f}×{mark} | "
            f"{float(b['accuracy']):.3f} | {float(o['accuracy']):.3f} | {d:+.1f} |"
        )
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    h95, h90 = t_quantile(0.975, n - 1) * se, t_quantile(0.95, n - 1) * se
    t_stat = mean / se if se > 0 else 0.0
    p_two = 2 * (1 - _t_cdf(abs(t_stat), n - 1))
    lower = sum(d < 0 for d in diffs)
    higher = sum(d > 0 for d in diffs)
    equivalent = -margin < mean - h90 and mean + h90 < margin
    median, (med_lo, med_hi), coverage = median_interval(diffs)
    lines += [
        "",
        f"{n} seeds: accuracy `{base}` {sum(acc_b) / n:.4f}, `{ours}` {sum(acc_o) / n:.4f}; "
        f"paired difference {mean:+.2f} points (SD {sd:.2f}), 95% t-interval "
        f"[{mean - h95:+.2f}, {mean + h95:+.2f}], paired t-test p = {p_two:.2f}; "
        f"`{ours}` lower in {lower}, higher in {higher}, equal in {n - lower - higher}.",
        f"Equivalence within ±{margin:g} point(s) (TOST, 90% interval "
        f"[{mean - h90:+.2f}, {mean + h90:+.2f}]): {'shown' if equivalent else 'not shown'}.",
        f"Median difference {median:+.2f} points, distribution-free interval "
        f"[{med_lo:+.2f}, {med_hi:+.2f}] (order statistics, {100 * coverage:.1f}% coverage; "
        "robust to a single wild run).",
    ]
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        lines.append(
            f"Time `{ours}` / `{base}`: {geo:.2f}× (geometric mean of {len(ratios)} clean seeds; "
            f"{min(ratios):.2f}–{max(ratios):.2f}×)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--ours", default="alphanas")
    parser.add_argument("--base", default="trainer")
    parser.add_argument("--margin", type=float, default=1.0, help="equivalence margin, points")
    parser.add_argument("--add", nargs="+", type=Path, default=[], metavar="FILE")
    parser.add_argument(
        "--not-clean", action="store_true", help="mark the added runs' seconds as not clean"
    )
    args = parser.parse_args(argv)
    rows = read_rows(args.csv) if args.csv.exists() else []
    if args.add:
        have = {(r["seed"], r["objective"]) for r in rows}
        for path in args.add:
            for row in parse_trial_cost(path.read_text(), source=str(path)):
                if (row["seed"], row["objective"]) in have:
                    raise SystemExit(f"{path}: seed {row['seed']} {row['objective']} is stored")
                rows.append({**row, "clean": "0" if args.not_clean else "1"})
        rows.sort(key=lambda r: (int(r["seed"]), r["objective"]))
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    print(summarise(rows, args.ours, args.base, args.margin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
