"""Results of a study, as the ``alphanas`` command reads them: one import for its three commands.

The work lives in one module per job:

- :mod:`alphanas_optuna.results`: the evaluated trials, the study's answer
  (:func:`best_feasible_trial`), its one Pareto front (:func:`~alphanas_optuna.results.front`) and
  what the answer gains and loses against the full model;
- :mod:`alphanas_optuna.pareto`: :func:`pareto` (``alphanas pareto``), the front as a table, a
  Plotly figure and a note that optuna-dashboard shows;
- :mod:`alphanas_optuna.intervals`: :func:`wilson_interval` and :class:`TestResult`;
- :mod:`alphanas_optuna.final`: the final fine-tune, :func:`table1` (``alphanas report``) and
  :func:`export` (``alphanas export``).

This module re-exports their public names, so ``from alphanas_optuna.report import ...`` keeps
working.
"""

from __future__ import annotations

from alphanas_optuna.final import (
    FinalSetup,
    Table1,
    Table1Row,
    build_table1,
    evaluate_test,
    export,
    final_fine_tune,
    final_training_config,
    prepare_final,
    report_data_config,
    table1,
)
from alphanas_optuna.intervals import TestResult, wilson_interval
from alphanas_optuna.pareto import FIGURE_ID, pareto, pareto_figure, pareto_table
from alphanas_optuna.results import (
    EvaluatedTrial,
    NoFeasibleTrialError,
    ReportError,
    best_feasible_trial,
    evaluated_trials,
    front,
    pareto_front,
)

__all__ = [
    "FIGURE_ID",
    "EvaluatedTrial",
    "FinalSetup",
    "NoFeasibleTrialError",
    "ReportError",
    "Table1",
    "Table1Row",
    "TestResult",
    "best_feasible_trial",
    "build_table1",
    "evaluate_test",
    "evaluated_trials",
    "export",
    "final_fine_tune",
    "final_training_config",
    "front",
    "pareto",
    "pareto_figure",
    "pareto_front",
    "pareto_table",
    "prepare_final",
    "report_data_config",
    "table1",
    "wilson_interval",
]
