"""The Pareto front of a study over (accuracy A, parameters N): table, figure, dashboard note.

:func:`pareto` (``alphanas pareto``) shows every evaluated trial of a study, feasible or not, and
marks :func:`~alphanas_optuna.results.front` (the one definition of the study's front, over the
feasible trials); it writes a Plotly figure (HTML, PNG on request) and attaches the figure and a
note to the study, so ``optuna-dashboard <storage>`` shows them. It reads the study and changes
none of its trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from alphanas_optuna.errors import first_line
from alphanas_optuna.results import (
    EvaluatedTrial,
    Measurement,
    NoFeasibleTrialError,
    ReportError,
    best_feasible_trial,
    compare_to_full,
    evaluated_trials,
    full_model_trial,
    load_existing_study,
    on_front,
    pareto_front,
    stored_fitness,
    study_answer,
)

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = ["FIGURE_ID", "pareto", "pareto_figure", "pareto_front", "pareto_table"]

#: Id of the figure that :func:`pareto` attaches to a study; running it again replaces the figure.
FIGURE_ID = "alphanas-pareto"


def pareto_table(trials: Sequence[EvaluatedTrial], on_front: set[int]) -> str:
    """Markdown table of ``trials`` (by parameters, then accuracy), marking feasibility and front.

    Args:
        trials: The evaluated trials.
        on_front: Trial numbers on the Pareto front.
    """
    lines = [
        "| trial | mask | layers | accuracy | params (M) | Q | feasible | on front |",
        "|---:|:---|---:|---:|---:|---:|:---:|:---:|",
    ]
    for t in sorted(trials, key=lambda e: (e.n_params, -e.accuracy, e.number)):
        q = "" if t.quality is None else f"{t.quality:.4f}"
        lines.append(
            f"| {t.number} | `{t.mask}` | {t.n_layers} | {t.accuracy:.4f} | "
            f"{_millions(t.n_params)} | {q} | {'yes' if t.feasible else 'no'} | "
            f"{'yes' if t.number in on_front else ''} |"
        )
    return "\n".join(lines)


def pareto_figure(
    trials: Sequence[EvaluatedTrial], on_front: set[int], title: str = "Pareto front"
) -> go.Figure:
    """Plotly figure: every evaluated trial as a point, the front as a line, infeasible as ``x``.

    Coordinates are plain lists (not NumPy arrays), so the JSON holds them as numbers that any
    plotly.js version (the dashboard's included) reads.
    """
    import plotly.graph_objects as go

    def hover(t: EvaluatedTrial) -> str:
        q = "" if t.quality is None else f"<br>Q {t.quality:.4f}"
        why = f"<br>{t.reason}" if t.reason and not t.feasible else ""
        return (
            f"trial {t.number}<br>mask {t.mask} ({t.n_layers} layers)<br>"
            f"accuracy {t.accuracy:.4f}<br>params {t.n_params:,}{q}{why}"
        )

    fig = go.Figure()
    line = sorted(
        (t for t in trials if t.number in on_front), key=lambda e: (e.n_params, -e.accuracy)
    )
    fig.add_trace(
        go.Scatter(
            x=[t.n_params / 1e6 for t in line],
            y=[t.accuracy for t in line],
            mode="lines",
            line={"shape": "hv", "color": "#1f77b4", "width": 2},
            name="Pareto front",
            hoverinfo="skip",
        )
    )
    for feasible, name, symbol, color in (
        (True, "feasible", "circle", "#1f77b4"),
        (False, "infeasible", "x", "#d62728"),
    ):
        group = [t for t in trials if t.feasible is feasible]
        fig.add_trace(
            go.Scatter(
                x=[t.n_params / 1e6 for t in group],
                y=[t.accuracy for t in group],
                mode="markers",
                name=name,
                marker={
                    "symbol": symbol,
                    "color": color,
                    "size": [11 if t.number in on_front else 7 for t in group],
                    "line": {"width": 1, "color": "#333333"} if feasible else None,
                },
                text=[hover(t) for t in group],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="parameters (M)",
        yaxis_title="validation accuracy",
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig


def pareto(storage: str, study_name: str, out: Path | None = None, png: bool = False) -> str:
    """The Pareto front of a study over (accuracy, parameters): table, figure, dashboard attachment.

    Every evaluated trial (see :func:`evaluated_trials`) is a point, feasible or not. The figure is
    written as self-contained HTML to ``out`` (default ``<study-name>-pareto.html``; plotly.js is
    inlined, about 5 MB, so it opens offline), and as PNG next to it when ``png`` is set (needs
    kaleido and a Chrome/Chromium; when that fails the HTML is kept and one line says so). The
    figure and a markdown summary are attached to the study with
    ``optuna_dashboard.save_plotly_graph_object`` (id :data:`FIGURE_ID`, replaced on each run) and
    ``optuna_dashboard.save_note`` (this replaces the study's note), so
    ``optuna-dashboard <storage>`` shows them on the study's page.

    Args:
        storage: Storage URL of the study, e.g. ``sqlite:///quickstart.db``.
        study_name: Name of the study.
        out: Path of the HTML file.
        png: Also write ``out`` with the suffix ``.png``.

    Returns:
        The markdown table followed by a few lines on what was written where.

    Raises:
        ReportError: No such study, or it has no evaluated trial yet.
    """
    import optuna_dashboard

    study = load_existing_study(storage, study_name)
    trials = evaluated_trials(study)
    if not trials:
        raise ReportError(
            f"study {study_name!r} has no evaluated trial yet (none has an accuracy and a "
            "parameter count); run `alphanas search` first"
        )
    front_numbers = on_front(study)
    table = pareto_table(trials, front_numbers)
    fig = pareto_figure(
        trials,
        front_numbers,
        title=f"AlphaNAS Pareto front of {study_name!r}: accuracy vs parameters",
    )

    out = Path(out) if out is not None else Path(f"{study_name}-pareto.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out, include_plotlyjs=True, full_html=True)
    messages = [f"Figure: {out}"]
    if png:
        png_path = out.with_suffix(".png")
        try:
            fig.write_image(png_path, width=1000, height=650)
            messages.append(f"PNG: {png_path}")
        except Exception as exc:  # noqa: BLE001 - kaleido or its browser missing: keep the HTML
            messages.append(
                f"PNG not written ({type(exc).__name__}: {first_line(exc)}); the HTML figure is "
                f"at {out}"
            )

    summary = _pareto_note(study, trials, front_numbers)
    optuna_dashboard.save_plotly_graph_object(study, fig, graph_object_id=FIGURE_ID)
    optuna_dashboard.save_note(study, summary)
    messages.append(
        f"Attached the figure and a summary note to study {study_name!r}; see them with "
        f"`optuna-dashboard {storage}`"
    )
    n_feasible = sum(t.feasible for t in trials)
    header = (
        f"Pareto front of study {study_name!r}: {len(trials)} evaluated trials "
        f"({n_feasible} feasible), {len(front_numbers)} on the front of the feasible ones (accuracy "
        "up, parameters down)."
    )
    return "\n\n".join([header, table, "\n".join(messages)])


def _pareto_note(study: optuna.Study, trials: Sequence[EvaluatedTrial], on_front: set[int]) -> str:
    feasible = [t for t in trials if t.feasible]
    lines = [
        f"## AlphaNAS: Pareto front of `{study.study_name}`",
        "",
        f"{len(trials)} evaluated trials ({len(feasible)} feasible, "
        f"{len(trials) - len(feasible)} infeasible); {len(on_front)} on the Pareto front of the "
        "feasible ones over validation accuracy (up) and parameters (down). The figure *AlphaNAS "
        "Pareto front* shows every trial; infeasible ones are red crosses.",
        "",
    ]
    try:
        best = best_feasible_trial(study, stored_fitness(study))
        estimate = study_answer(study, stored_fitness(study))
    except NoFeasibleTrialError:
        best = estimate = None
    answer = next((t for t in feasible if best is not None and t.number == best.number), None)
    if answer is not None and estimate is not None:
        q = "" if answer.quality is None else f", Q {answer.quality:.4f}"
        objective = "Q" if len(study.directions) == 1 else "accuracy"
        lines += [
            f"**Answer** (`alphanas_optuna.winner`: the best estimate from all evaluations, not "
            f"the luckiest one): mask `{answer.mask}` ({answer.n_layers} layers), estimated "
            f"{objective} {estimate.quality:.4f} ± {estimate.stderr:.4f} from "
            f"{estimate.n_evaluations} evaluation(s) (trials "
            f"{', '.join(map(str, estimate.trials))}); first feasible one: trial "
            f"{answer.number}, accuracy {answer.accuracy:.4f}, "
            f"{_millions(answer.n_params)} M parameters{q}.",
            "",
        ]
        full = full_model_trial(study)
        if full is not None:
            comparison = compare_to_full(Measurement.of(answer), Measurement.of(full))
            lines += [
                f"Against the full model (trial {full.number}, measured in this study):",
                "",
                *(f"- {line.strip()}" for line in comparison.lines()),
                "",
            ]
    lines += [
        "Trials on the front:",
        "",
        pareto_table([t for t in trials if t.number in on_front], on_front),
        "",
        "_Written by `alphanas pareto`; running it again replaces this note and the figure._",
    ]
    return "\n".join(lines)


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}" if n >= 1e6 else f"{n / 1e6:.4f}"
