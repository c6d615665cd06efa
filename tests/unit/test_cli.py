"""The `backbeat` command: every sub-command is listed, errors are one clear line."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from backbeat.cli import REGISTRARS, SUB_APPS, app

EXPECTED_TOP_LEVEL = {"up", "down", "status", "package", "demo"}


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_every_sub_command() -> None:
    out = _help()
    for name, *_ in SUB_APPS:
        assert name in out
    for name in EXPECTED_TOP_LEVEL:
        assert name in out, f"`backbeat {name}` missing from --help"
    assert len(REGISTRARS) == 2


def test_every_group_has_commands() -> None:
    for name, *_ in SUB_APPS:
        out = _help(name)
        assert "Commands" in out, f"`backbeat {name}` has no commands"


def test_console_script_reports_bad_setting_in_one_line(tmp_path) -> None:
    env = {"BACKBEAT_BACKEND": "azure", "PATH": "/usr/bin:/bin", "BACKBEAT_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "backbeat.cli", "hours", "status"], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "BACKBEAT_BACKEND" in proc.stderr
    assert "Traceback" not in proc.stderr
