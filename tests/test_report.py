"""alphanas pareto / report / export: Pareto front, Table 1 with Wilson intervals, exported model."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TINY_STUDY, write_tiny_model, write_toy_data
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from alphanas_optuna import final, report
from alphanas_optuna.config import load_study_config
from alphanas_optuna.objective import FitnessConfig
from alphanas_optuna.report import (
    FIGURE_ID,
    NoFeasibleTrialError,
    ReportError,
    best_feasible_trial,
    front,
    pareto,
    pareto_front,
    wilson_interval,
)

# ------------------------------------------------------------------------ hand-made trials


def add_trial(
    study: optuna.Study,
    mask: str,
    accuracy: float | None,
    n_params: int,
    *,
    state: TrialState = TrialState.COMPLETE,
    lam: float = 0.002,
    reason: str | None = None,
    fidelity: str | None = None,
    system_attrs: dict | None = None,
) -> None:
    """Add a trial as the AlphaNAS objective would have stored it."""
    quality = None if accuracy is None else accuracy - lam * n_params / 1e6
    feasible = state == TrialState.COMPLETE
    value = None
    if state == TrialState.COMPLETE:
        value = quality if len(study.directions) == 1 else None
    values = [accuracy, float(n_params)] if feasible and len(study.directions) == 2 else None
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            values=values,
            params={f"layer_{i:02d}": int(b) for i, b in enumerate(mask)},
            distributions={
                f"layer_{i:02d}": CategoricalDistribution((0, 1)) for i in range(len(mask))
            },
            user_attrs={
                "mask": mask,
                "n_layers": mask.count("1"),
                "accuracy": accuracy,
                "n_params": n_params,
                "quality": quality,
                "feasible": feasible,
                "infeasible_reason": reason,
                **({"fidelity": fidelity} if fidelity is not None else {}),
            },
            system_attrs=system_attrs or {},
        )
    )


def hand_made_study(storage: str, name: str = "hand") -> optuna.Study:
    """Trials 0..8; the front is 2, 1, 6 (tie with 1), 0 (3 would dominate them but is infeasible)."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    add_trial(study, "1111", 0.91, 40_000_000)  # 0: front, most accurate
    add_trial(study, "1100", 0.88, 20_000_000)  # 1: front, best Q
    add_trial(study, "1000", 0.80, 10_000_000)  # 2: front
    add_trial(study, "0001", 0.60, 5_000_000, state=TrialState.PRUNED, reason="accuracy low")  # 3
    add_trial(study, "0011", 0.85, 20_000_000)  # 4: dominated by 1
    add_trial(study, "1110", None, 120_000_000, state=TrialState.PRUNED, reason="max_params")  # 5
    add_trial(study, "1100", 0.88, 20_000_000)  # 6: same mask as 1 (reused): tie, on the front
    add_trial(study, "0110", 0.70, 20_000_000, state=TrialState.PRUNED, reason="accuracy low")  # 7
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"mask": "1011"}))  # 8
    return study


def system_attrs(study: optuna.Study) -> dict:
    """The study's system attributes, where optuna-dashboard keeps figures and notes."""
    return study._storage.get_study_system_attrs(study._study_id)


def parse_table(text: str) -> dict[int, dict[str, str]]:
    """Rows of the pareto markdown table by trial number."""
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[1:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        table[int(cells["trial"])] = cells
    return table


# --------------------------------------------------------------------------- Pareto front


def test_pareto_front_keeps_ties_and_drops_dominated_points() -> None:
    points = [
        (0.90, 100.0),  # 0 front
        (0.85, 50.0),  # 1 front
        (0.90, 100.0),  # 2 equal to 0: also on the front
        (0.80, 50.0),  # 3 same size as 1, less accurate: dominated
        (0.95, 200.0),  # 4 front
        (0.95, 300.0),  # 5 as accurate as 4 but larger: dominated
        (0.70, 10.0),  # 6 front (smallest)
        (0.85, 60.0),  # 7 as accurate as 1 but larger: dominated
        (0.60, 10.0),  # 8 same size as 6, less accurate: dominated
        (0.99, 10.0) if False else (0.50, 400.0),  # 9 dominated by everything
    ]
    assert pareto_front(points) == [6, 1, 0, 2, 4]
    assert pareto_front([]) == []
    assert pareto_front([(0.5, 1.0)]) == [0]
    # A point better in both dominates everything else.
    assert pareto_front([(0.9, 5.0), (0.95, 1.0), (0.5, 0.5)]) == [2, 1]


def test_pareto_table_marks_feasibility_and_the_front(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hand.db'}"
    hand_made_study(storage)
    text = pareto(storage, "hand", out=tmp_path / "front.html")
    table = parse_table(text)
    # FAIL and pruned-before-training (no accuracy) trials are not points.
    assert sorted(table) == [0, 1, 2, 3, 4, 6, 7]
    assert {n for n, r in table.items() if r["on front"] == "yes"} == {0, 1, 2, 6}
    assert {n for n, r in table.items() if r["feasible"] == "yes"} == {0, 1, 2, 4, 6}
    # An infeasible mask is not an answer: never on the front, even where it is not dominated.
    assert table[3]["feasible"] == "no" and table[3]["on front"] == ""
    assert table[1]["mask"] == "`1100`" and table[1]["layers"] == "2"
    assert table[1]["accuracy"] == "0.8800" and table[1]["params (M)"] == "20.00"
    assert float(table[1]["Q"]) == pytest.approx(0.88 - 0.002 * 20)
    # Rows go by size: the smallest model first.
    assert list(table)[0] == 3
    assert "7 evaluated trials (5 feasible), 4 on the front of the feasible ones" in text
    # The front is one entry per mask: mask 1100 (trials 1 and 6) stands as its first trial,
    # at the mean of its two evaluations.
    members = front(optuna.load_study(study_name="hand", storage=storage))
    assert [t.number for t in members] == [2, 1, 0]
    assert members[1].accuracy == pytest.approx(0.88)
    assert f"optuna-dashboard {storage}" in text


def test_pareto_writes_html_and_attaches_figure_and_note(tmp_path: Path) -> None:
    import optuna_dashboard
    import plotly.io
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    storage = f"sqlite:///{tmp_path / 'hand.db'}"
    hand_made_study(storage)
    html = tmp_path / "out" / "front.html"
    pareto(storage, "hand", out=html)
    page = html.read_text()
    assert "AlphaNAS Pareto front of" in page and "accuracy vs parameters" in page
    for mask in ("1111", "1100", "1000", "0001", "0011", "0110"):
        assert f"mask {mask}" in page
    assert "mask 1110" not in page  # no accuracy: not a point

    study = optuna.load_study(study_name="hand", storage=storage)
    figures = get_plotly_graph_objects(system_attrs(study))
    assert list(figures) == [FIGURE_ID]
    fig = plotly.io.from_json(figures[FIGURE_ID])
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"Pareto front", "feasible", "infeasible"}
    front = traces["Pareto front"]
    assert list(front.x) == [10.0, 20.0, 20.0, 40.0]
    assert list(front.y) == [0.80, 0.88, 0.88, 0.91]
    assert sorted(traces["infeasible"].y) == [0.60, 0.70]
    assert len(traces["feasible"].x) == 5
    assert traces["infeasible"].marker.symbol == "x"

    note = optuna_dashboard.get_note(study)
    assert "Pareto front of `hand`" in note
    # The answer: mask 1100, from both of its evaluations; trial 1 is its first feasible one.
    assert "mask `1100`" in note and "(trials 1, 6); first feasible one: trial 1" in note
    assert "`0011`" not in note  # dominated: not in the note's front table
    # What the answer gains and loses against the full mask measured in the same study.
    assert "Against the full model (trial 0, measured in this study)" in note
    assert "- layers kept:      2 of 4" in note
    assert "20.00M = 50.0% of the full model's 40.00M" in note
    assert "0.8800 against 0.9100 (-3.0 points)" in note

    # Running it again replaces the figure (same id) and bumps the note's version.
    add_trial(study, "0100", 0.90, 10_000_000)
    text = pareto(storage, "hand", out=html)
    study = optuna.load_study(study_name="hand", storage=storage)
    figures = get_plotly_graph_objects(system_attrs(study))
    assert list(figures) == [FIGURE_ID]
    assert system_attrs(study)["dashboard:note_ver"] == 2
    assert {n for n, r in parse_table(text).items() if r["on front"] == "yes"} == {0, 9}
    assert "mask `0100` (1 layers)" in optuna_dashboard.get_note(study)


def test_pareto_png_failure_keeps_the_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import plotly.graph_objects as go

    def broken(self, *args, **kwargs):
        raise RuntimeError("no browser for kaleido\nsecond line")

    monkeypatch.setattr(go.Figure, "write_image", broken)
    storage = f"sqlite:///{tmp_path / 'hand.db'}"
    hand_made_study(storage)
    text = pareto(storage, "hand", out=tmp_path / "f.html", png=True)
    lines = [line for line in text.splitlines() if "PNG" in line]
    assert lines == [
        f"PNG not written (RuntimeError: no browser for kaleido); the HTML figure is at "
        f"{tmp_path / 'f.html'}"
    ]
    assert (tmp_path / "f.html").is_file() and not (tmp_path / "f.png").exists()


@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("google-chrome") is None,
    reason="kaleido needs Chrome or Chromium to write PNG (apt-get install chromium)",
)
def test_pareto_png(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hand.db'}"
    hand_made_study(storage)
    text = pareto(storage, "hand", out=tmp_path / "f.html", png=True)
    png = tmp_path / "f.png"
    assert f"PNG: {png}" in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1000  # width
    assert len(data) > 20_000


def test_pareto_default_path_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'hand.db'}"
    hand_made_study(storage, name="my-study")
    pareto(storage, "my-study")
    assert (tmp_path / "my-study-pareto.html").is_file()
    with pytest.raises(ReportError, match=r"no study named 'other'.*studies there: my-study"):
        pareto(storage, "other")
    empty = optuna.create_study(study_name="empty", storage=storage)
    empty.add_trial(create_trial(state=TrialState.FAIL))
    with pytest.raises(ReportError, match="study 'empty' has no evaluated trial"):
        pareto(storage, "empty")


# ------------------------------------------------------------------------------ best trial, CI


def test_best_feasible_trial_single_and_two_objectives(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = hand_made_study(storage)
    assert best_feasible_trial(study).number == 1  # Q .84; trial 6 ties, the earlier wins
    assert best_feasible_trial(study).value > study.trials[0].value

    two = optuna.create_study(
        study_name="two", storage=storage, directions=["maximize", "minimize"]
    )
    add_trial(two, "1111", 0.92, 40_000_000)
    add_trial(two, "1100", 0.88, 20_000_000)
    add_trial(two, "0001", 0.99, 5_000_000, state=TrialState.PRUNED)  # infeasible: never best
    # Q computed from the user attributes with the given lambda.
    assert best_feasible_trial(two, FitnessConfig(lambda_per_million=0.0)).number == 0
    assert best_feasible_trial(two, FitnessConfig(lambda_per_million=0.01)).number == 1

    none = optuna.create_study(study_name="none", storage=storage)
    add_trial(none, "0001", 0.5, 5_000_000, state=TrialState.PRUNED)
    with pytest.raises(NoFeasibleTrialError, match=r"study 'none' has no feasible mask \(1 PRUNED"):
        best_feasible_trial(none)


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = wilson_interval(10, 10)
    assert round(low, 4) == 0.7225 and high == pytest.approx(1.0)
    # Large n: close to the normal approximation p +- 1.96 sqrt(p(1-p)/n).
    low, high = wilson_interval(8_500, 10_000)
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.85 * 0.15 / 10_000), rel=1e-3)
    assert wilson_interval(5, 10, z=1.0)[1] < 0.7634
    for args in ((0, 0), (11, 10), (-1, 10)):
        with pytest.raises(ValueError):
            wilson_interval(*args)


# ------------------------------------------------------------------- Table 1 and export (tiny)


@pytest.fixture(scope="module")
def tiny_searched(tmp_path_factory: pytest.TempPathFactory):
    """A tiny study searched in-process on a 4-layer BERT: (config, storage, study name)."""
    from alphanas_optuna import AlphaNASObjective

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-report")
    model = write_tiny_model(root / "model")
    data = write_toy_data(root / "data")
    path = root / "tiny.toml"
    path.write_text(TINY_STUDY.format(model=model, data=data, n_trials=8))
    config = load_study_config(path)
    storage = f"sqlite:///{root / 'tiny.db'}"
    objective = AlphaNASObjective.from_pretrained(
        config.model.name,
        data=config.data,
        num_labels=config.model.num_labels,
        training=config.training,
        fitness=config.fitness,
    )
    study = optuna.create_study(
        study_name="tiny",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    for mask in ("1111", "1100", "0110", "1000", "0001"):
        study.enqueue_trial({f"layer_{i:02d}": int(b) for i, b in enumerate(mask)})
    study.optimize(objective, n_trials=5)
    return config, storage, "tiny"


def test_table1_full_vs_best_with_wilson_interval(tiny_searched, tmp_path: Path) -> None:
    from alphanas_optuna.synthesis import count_parameters, drop_layers, load_pretrained

    config, storage, name = tiny_searched
    study = optuna.load_study(study_name=name, storage=storage)
    best = best_feasible_trial(study, config.fitness)
    feasible = [t for t in study.trials if t.user_attrs.get("feasible")]
    assert len(feasible) >= 2
    # lambda 1000/M: the smallest feasible model wins.
    assert best.user_attrs["n_layers"] == min(t.user_attrs["n_layers"] for t in feasible) < 4

    out = tmp_path / "table1.md"
    text = report.table1(config, storage, name, out=out)
    assert out.read_text() == text + "\n"
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == [
        "model",
        "mask",
        "layers",
        "params (M)",
        "params vs full",
        "test accuracy",
        "95% CI",
        "n",
        "latency b=1 (ms)",
        "latency b=32 (ms)",
        "speed-up",
    ]
    assert len(rows) == 3
    full_cells = [c.strip() for c in rows[1].strip("|").split("|")]
    best_cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert full_cells[:3] == ["full", "`1111`", "4"]
    assert best_cells[:3] == [
        f"best (trial {best.number})",
        f"`{best.user_attrs['mask']}`",
        str(best.user_attrs["n_layers"]),
    ]
    assert full_cells[7] == best_cells[7] == "64"  # [data] test_size
    assert full_cells[10] == "1.00x"
    assert "The best mask was not confirmed" in text
    assert "on cpu, at 32 tokens" in text

    base, _ = load_pretrained(config.model.name, num_labels=2)
    table = report.build_table1(config, storage, name)
    full, small = table.rows
    assert full.n_params == count_parameters(base)
    assert small.n_params == count_parameters(drop_layers(base, best.user_attrs["mask"]))
    assert small.n_params == best.user_attrs["n_params"]
    assert table.train_examples == 160 - 48  # [report] train_size unset: all but validation
    for row, cells in ((full, full_cells), (small, best_cells)):
        assert row.test.n == 64
        assert row.test.accuracy == row.test.correct / 64
        assert row.test.ci_low <= row.test.accuracy <= row.test.ci_high
        assert (row.test.ci_low, row.test.ci_high) == wilson_interval(row.test.correct, 64)
        assert cells[5] == f"{row.test.accuracy:.4f}"
        assert cells[6] == f"[{row.test.ci_low:.4f}, {row.test.ci_high:.4f}]"
        # The toy task is easy: both models learn it in the final fine-tune.
        assert row.test.accuracy >= 0.75
        # Latency: the median forward pass at batch 1 and 32, at [data] max_length.
        assert set(row.latency) == {1, 32} and all(0 < v < 10 for v in row.latency.values())
    timed = [line for line in table.markdown().splitlines() if line.startswith("| ")][1:]
    for row, line in zip((full, small), timed, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[8] == f"{1000 * row.latency[1]:.1f}"
        assert cells[10] == f"{full.latency[32] / row.latency[32]:.2f}x"

    # Same data, seed and budget: building the table twice gives the same numbers (all but the
    # timings).
    def untimed(markdown: str) -> list[str]:
        return ["|".join(line.split("|")[:9]) for line in markdown.splitlines()]

    assert untimed(text) == untimed(table.markdown())
    assert re.search(r"fine-tuned on 112 training examples for 3 epochs", text)


def test_report_draws_a_missing_head_with_the_report_seed(tiny_searched, tmp_path: Path) -> None:
    import dataclasses

    from tiny_models import tiny_config, tiny_tokenizer
    from transformers import BertModel

    from alphanas_optuna.synthesis import load_pretrained

    config, storage, name = tiny_searched
    # A bare encoder checkpoint (like all-MiniLM-L6-v2): the report's model gets a new head.
    encoder = tmp_path / "encoder"
    BertModel(tiny_config("bert")).save_pretrained(encoder)
    tiny_tokenizer().save_pretrained(encoder)

    def head(report_seed: int, training_seed: int) -> torch.Tensor:
        bare = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, name=str(encoder)),
            training=dataclasses.replace(config.training, seed=training_seed),
            report=dataclasses.replace(config.report, seed=report_seed),
        )
        setup = final.prepare_final(bare, storage, name, need_test=False)
        assert setup.training.seed == report_seed
        return setup.model.classifier.weight.detach().clone()

    expected = load_pretrained(str(encoder), num_labels=2, seed=5)[0].classifier.weight
    assert torch.equal(head(5, 0), expected)  # the [report] seed, not the [training] seed
    assert torch.equal(head(5, 0), head(5, 1))
    assert not torch.allclose(head(5, 0), head(6, 0))


def test_export_round_trip_predicts_the_same_labels(
    tiny_searched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alphanas_optuna.data import load_splits
    from alphanas_optuna.synthesis import count_parameters

    config, storage, name = tiny_searched
    trained = []
    original = final.final_fine_tune

    def capture(*args, **kwargs):
        model, result = original(*args, **kwargs)
        trained.append(model)
        return model, result

    monkeypatch.setattr(final, "final_fine_tune", capture)
    out = report.export(config, storage, name, tmp_path / "exported")
    assert out == tmp_path / "exported"
    (in_memory,) = trained

    info = json.loads((out / "alphanas.json").read_text())
    best = best_feasible_trial(optuna.load_study(study_name=name, storage=storage))
    assert info["study"] == name and info["trial"] == best.number
    n_layers = best.user_attrs["n_layers"]
    assert info["mask"] == best.user_attrs["mask"] and info["n_layers"] == n_layers < 4
    assert info["n_params"] == count_parameters(in_memory) == best.user_attrs["n_params"]
    assert info["accuracy"] == best.user_attrs["accuracy"]
    assert info["test"]["n"] == 64
    assert info["test"]["ci95"][0] <= info["test"]["accuracy"] <= info["test"]["ci95"][1]

    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert loaded.config.num_hidden_layers == n_layers
    assert count_parameters(loaded) == info["n_params"]
    texts, labels = load_splits(report.report_data_config(config)).test
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        logits_loaded = loaded(**batch).logits
        logits_memory = in_memory.cpu().eval()(**batch).logits
    torch.testing.assert_close(logits_loaded, logits_memory)
    preds = logits_loaded.argmax(-1)
    assert torch.equal(preds, logits_memory.argmax(-1))
    assert (preds.numpy() == labels).mean() == pytest.approx(info["test"]["accuracy"])


def test_table1_and_export_refuse_a_study_without_feasible_trial(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "model")
    data = write_toy_data(tmp_path / "data")
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_STUDY.format(model=model, data=data, n_trials=8))
    config = load_study_config(path)
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    study = optuna.create_study(study_name="nothing-feasible", storage=storage)
    add_trial(study, "0001", 0.5, 5_000, state=TrialState.PRUNED)
    with pytest.raises(NoFeasibleTrialError, match="study 'nothing-feasible' has no feasible"):
        report.table1(config, storage, "nothing-feasible")
    with pytest.raises(NoFeasibleTrialError, match="study 'nothing-feasible'"):
        report.export(config, storage, "nothing-feasible", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_checks_the_model_input_length_like_the_search(tiny_searched) -> None:
    """One loader for the search and the final fine-tune: both refuse a max_length the model
    cannot take, before any training."""
    from tiny_models import _MAX_POSITIONS

    from alphanas_optuna import AlphaNASObjective

    config, storage, name = tiny_searched
    long = config.replace(data=dataclasses.replace(config.data, max_length=_MAX_POSITIONS + 1))
    with pytest.raises(ValueError, match=rf"max_length = {_MAX_POSITIONS + 1} is more than"):
        final.prepare_final(long, storage, name, need_test=True)
    with pytest.raises(ValueError, match=rf"max_length = {_MAX_POSITIONS + 1} is more than"):
        AlphaNASObjective.from_pretrained(config.model.name, data=long.data)


def test_a_distilled_report_teaches_with_its_full_model_and_export_reuses_it(
    tiny_searched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_counter: list[int]
) -> None:
    from alphanas_optuna.distill import DistillConfig, teacher_cache_dir

    monkeypatch.setenv("ALPHANAS_CACHE", str(tmp_path / "cache"))
    config, storage, name = tiny_searched
    config = config.replace(
        training=dataclasses.replace(config.training, distill=DistillConfig(alpha=0.7))
    )
    steps = step_counter
    per_fine_tune = 3 * math.ceil((160 - 48) / 16)  # [report] epochs x batches

    text = report.table1(config, storage, name)
    # The full model and the best mask: two fine-tunes; the full model is the teacher.
    assert len(steps) == 2 * per_fine_tune
    assert "distilled from the full model above (alpha 0.7, temperature 2)" in text
    assert len(list(teacher_cache_dir().glob("*.npz"))) == 1

    steps.clear()
    report.export(config, storage, name, tmp_path / "exported")
    assert len(steps) == per_fine_tune  # the teacher's logits came from the cache
