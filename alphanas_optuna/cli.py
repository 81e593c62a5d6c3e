"""The ``alphanas`` command: search, pareto, report, export, prepare-data.

``alphanas search STUDY.toml`` runs (or resumes) an AlphaNAS study on an Optuna storage; the same
command in several processes (or machines, with PostgreSQL) shares the work. ``pareto``, ``report``
and ``export`` read a study back. This module only parses arguments and dispatches to typed
functions (:func:`alphanas_optuna.search.search` and :mod:`alphanas_optuna.report`); everything
that needs torch is imported inside them, so ``alphanas --help`` is fast.

Exit codes: 0 success, 1 an unexpected error (with a traceback), 2 a bad input (study file, data,
model, storage or arguments; one line on stderr), 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphanas_optuna.errors import UsageError, call_checked
from alphanas_optuna.search import search
from alphanas_optuna.storage import default_storage

if TYPE_CHECKING:
    from alphanas_optuna.config import StudyConfig

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# ------------------------------------------------------------------------------------ arguments


def _parser() -> argparse.ArgumentParser:
    from alphanas_optuna import __version__

    parser = argparse.ArgumentParser(
        prog="alphanas",
        description=(
            "Compress a pretrained BERT-family classifier by searching which encoder layers to "
            "keep (AlphaNAS), as an Optuna study."
        ),
        epilog="Run `alphanas COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"alphanas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def study_args(p: argparse.ArgumentParser, *, data: bool = True) -> None:
        p.add_argument(
            "--storage",
            metavar="URL",
            help="Optuna storage URL (default: sqlite:///<study-name>.db in the current directory; "
            "postgresql://user:password@host/db for several machines)",
        )
        p.add_argument(
            "--study-name",
            metavar="NAME",
            help="study name (default: [search] study_name, else the study file's name)",
        )
        if data:
            p.add_argument(
                "--data",
                metavar="PATH",
                help="local data instead of [data] source: a folder with train.parquet and "
                "test.parquet (or .csv, .jsonl), a single file, or an aclImdb folder",
            )

    p = sub.add_parser(
        "search",
        help="run or resume a study (the same command again resumes; run it in several "
        "processes to add workers)",
        description="Run or resume the AlphaNAS search of a study file. Running the same command "
        "again resumes the study; the same command in several processes shares it.",
    )
    p.add_argument("study_file", metavar="STUDY.toml", type=Path)
    study_args(p)
    p.add_argument(
        "--n-trials",
        type=int,
        metavar="N",
        help="total trials of the study, over every run and worker (default: [search] n_trials "
        "or generations x population_size)",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="stop this process after S seconds")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser(
        "pareto",
        help="Pareto front over accuracy and parameters; attaches a figure for optuna-dashboard",
        description="The Pareto front over (accuracy, parameters) of every evaluated trial.",
    )
    p.add_argument("--storage", metavar="URL", required=True, help="Optuna storage URL")
    p.add_argument("--study-name", metavar="NAME", required=True, help="study name")
    p.add_argument("--out", type=Path, metavar="FILE", help="write the figure (HTML) to FILE")
    p.add_argument("--png", action="store_true", help="also write a PNG next to the HTML")
    p.set_defaults(func=_cmd_pareto)

    p = sub.add_parser(
        "confirm",
        help="re-train the best candidates with several seeds on the validation split and store "
        "the runs in the study (resumable)",
        description="Re-train the study's top candidates (by the search's estimates; the best "
        "mask of each depth on the front of a two-objective study) with several seeds at the "
        "[confirm] budget, on the validation split, and store every run as a trial of the study. "
        "Running it again adds only the runs that are missing. report and export then use the "
        "confirmed results.",
    )
    p.add_argument("study_file", metavar="STUDY.toml", type=Path)
    study_args(p)
    p.add_argument("--top", type=int, metavar="M", help="candidates (default: [confirm] top)")
    p.add_argument("--seeds", type=int, metavar="R", help="runs each (default: [confirm] seeds)")
    p.set_defaults(func=_cmd_confirm)

    p = sub.add_parser(
        "report",
        help="Table 1: full model vs best mask, test accuracy with a 95%% confidence interval",
        description="Fine-tune the full model and the best mask on the train split and compare "
        "them on the test split (markdown).",
    )
    p.add_argument("study_file", metavar="STUDY.toml", type=Path)
    study_args(p)
    p.add_argument("--out", type=Path, metavar="FILE", help="write the markdown to FILE")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "export",
        help="fine-tune the best sub-model and save it with save_pretrained",
        description="Fine-tune the best mask's sub-model and save it, with its tokenizer, so "
        "that AutoModelForSequenceClassification.from_pretrained(DIR) loads it.",
    )
    p.add_argument("study_file", metavar="STUDY.toml", type=Path)
    p.add_argument("--out", type=Path, metavar="DIR", required=True, help="output folder")
    study_args(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "prepare-data",
        help="write train.parquet and test.parquet (the folder --data reads) from the Hub or "
        "the aclImdb tarball, once",
        description="Write OUT_DIR/train.parquet and OUT_DIR/test.parquet (columns text, label) "
        "from a Hub dataset (needs the Hub, once), the aclImdb_v1.tar.gz tarball or an aclImdb "
        "folder, or any file or folder that --data reads. Searches then read OUT_DIR with --data "
        "and need no network.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path)
    p.add_argument(
        "--source",
        default="stanfordnlp/imdb",
        metavar="SOURCE",
        help="Hub dataset id (default: stanfordnlp/imdb), aclImdb_v1.tar.gz, an aclImdb folder, "
        "or a file/folder of parquet, CSV or JSON lines",
    )
    p.add_argument("--text-column", default="text", help="text column of SOURCE (default: text)")
    p.add_argument("--label-column", default="label", help="label column (default: label)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_prepare_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alphanas`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _interrupted()
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not _during_interrupt(exc):
            raise
        # Ctrl-C hit a storage write and the clean-up failed: a trial may be left RUNNING; the
        # next run fails it (its process is gone) and queues its mask again.
        _interrupted()
        return EXIT_INTERRUPTED


def _interrupted() -> None:
    print(
        "\nalphanas: interrupted. Run the same command again to resume (a trial that was "
        "running is marked FAIL and its mask is queued to be evaluated again).",
        file=sys.stderr,
    )


def _during_interrupt(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__context__, seen + 1
    return False


def _error(message: str) -> None:
    print(f"alphanas: error: {' '.join(message.split())}", file=sys.stderr)


# ------------------------------------------------------------------------------------ commands


def _cmd_search(args: argparse.Namespace) -> int:
    config = _load_config(args.study_file, args.data)
    search(
        config,
        storage=args.storage,
        study_name=args.study_name,
        n_trials=args.n_trials,
        timeout=args.timeout,
    )
    return 0


def _cmd_pareto(args: argparse.Namespace) -> int:
    _check_study_exists(args.storage, args.study_name)
    report = _report_module()
    print(call_checked(report.pareto, args.storage, args.study_name, out=args.out, png=args.png))
    return 0


def _cmd_confirm(args: argparse.Namespace) -> int:
    from alphanas_optuna.confirm import confirm

    config = _load_config(args.study_file, args.data)
    study_name = args.study_name or config.study_name
    storage = args.storage or default_storage(study_name)
    for name, value in (("--top", args.top), ("--seeds", args.seeds)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be an integer >= 1, got {value}")
    _check_study_exists(storage, study_name)
    call_checked(confirm, config, storage, study_name, top=args.top, seeds=args.seeds)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    return _final_model_command(args, "table1")


def _cmd_export(args: argparse.Namespace) -> int:
    return _final_model_command(args, "export")


def _final_model_command(args: argparse.Namespace, function: str) -> int:
    """``report`` and ``export``: a study file, the study it was searched in, one output path."""
    config = _load_config(args.study_file, args.data)
    study_name = args.study_name or config.study_name
    storage = args.storage or default_storage(study_name)
    _check_study_exists(storage, study_name)
    func = getattr(_report_module(), function)
    print(call_checked(func, config, storage, study_name, args.out))
    return 0


def _cmd_prepare_data(args: argparse.Namespace) -> int:
    from alphanas_optuna.data import prepare_data

    written = call_checked(
        prepare_data,
        args.source,
        args.out_dir,
        text_column=args.text_column,
        label_column=args.label_column,
        overwrite=args.overwrite,
    )
    shown = ", ".join(
        f"{args.out_dir / (name + '.parquet')} ({n:,} rows)" for name, n in written.items()
    )
    print(f"Wrote {shown}. Search with: alphanas search STUDY.toml --data {args.out_dir}")
    return 0


def _report_module() -> Any:
    import importlib

    return importlib.import_module("alphanas_optuna.report")


def _load_config(path: Path, data: str | None) -> StudyConfig:
    from alphanas_optuna.config import StudyConfigError, load_study_config

    try:
        config = load_study_config(path)
    except StudyConfigError as exc:
        raise UsageError(str(exc)) from exc
    if data is not None:
        source = str(Path(os.path.expanduser(data)).resolve())
        if not Path(source).exists():
            raise UsageError(
                f"--data {data}: no such file or folder (write the IMDB folder once with "
                f"`alphanas prepare-data {data}`, from the Hub or the aclImdb tarball)"
            )
        config = config.replace(data=dataclasses.replace(config.data, source=source))
    return config


def _check_study_exists(storage: str, study_name: str) -> None:
    from alphanas_optuna.results import load_existing_study

    call_checked(load_existing_study, storage, study_name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
