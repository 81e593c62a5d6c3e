"""Errors and storage opening: one home each, one line for the user, checked before any loading."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from alphanas_optuna import cli
from alphanas_optuna.errors import HubUnreachableError, UsageError, first_line, usage_errors
from alphanas_optuna.storage import check_storage_url, open_storage, study_names

PACKAGE = Path(__file__).resolve().parents[1] / "alphanas_optuna"


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "alphanas_optuna"
            ):
                offenders += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert offenders == []


def test_first_line() -> None:
    assert first_line(ValueError("\n  bad value\nhint below\n")) == "bad value"
    assert first_line(ValueError()) == ""
    assert first_line(KeyError(), default_to_type=True) == "KeyError"


def test_one_hub_error_for_models_and_datasets() -> None:
    from alphanas_optuna import data, synthesis

    assert data.HubUnavailableError is HubUnreachableError is synthesis.HubUnreachableError
    # A bad input, so the command turns it into one line (exit 2).
    with pytest.raises(UsageError, match="no hub"), usage_errors():
        raise HubUnreachableError("no hub")


def test_usage_errors_keep_bugs_as_they_are() -> None:
    with pytest.raises(KeyError), usage_errors():
        raise KeyError("a bug keeps its traceback")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("quickstart.db", "not a database URL"),
        ("sqlite:////no/such/dir/x.db", "the folder /no/such/dir does not exist"),
    ],
)
def test_storage_that_cannot_work_is_refused_before_opening(url: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        check_storage_url(url)
    with pytest.raises(UsageError, match=needle):
        open_storage(url)


def test_storage_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        open_storage(f"sqlite:///{tmp_path}")


def test_study_names_of_a_file_not_made_yet_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert study_names(url) == []
    assert not (tmp_path / "new.db").exists()


def test_search_with_a_missing_storage_folder_fails_fast(
    tiny_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.perf_counter()
    argv = ["search", str(tiny_study), "--storage", "sqlite:////no/such/dir/x.db"]
    assert cli.main(argv) == cli.EXIT_USAGE
    # Refused before the model and data are loaded (that takes seconds with a real model).
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the folder /no/such/dir does not exist" in err[0], err
