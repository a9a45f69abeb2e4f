"""The `modelport` console script."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelport import __version__, cli


def test_version_subcommand_prints_the_installed_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"modelport {__version__}"


def test_a_subcommand_is_required() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def test_console_script_runs_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "modelport.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: modelport" in out.stdout
