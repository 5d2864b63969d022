"""The package's architecture holds: the import contracts in pyproject.toml (layers,
nothing imports training, no cycles), a wheel that ships every subpackage, and one
version string."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from typer.testing import CliRunner

import invgray_cli
from invgray_cli.app.cli import app

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "invgray_cli"


def test_import_contracts_are_kept() -> None:
    result = subprocess.run([Path(sys.executable).parent / "lint-imports", "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_subpackage_ships_in_the_wheel() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in PACKAGE.rglob("__init__.py")}
    assert found <= declared, f"add to [tool.setuptools] packages: {sorted(found - declared)}"


def test_at_most_six_modules_at_the_top_of_the_package() -> None:
    assert len(list(PACKAGE.glob("*.py"))) <= 6


def test_one_version_string() -> None:
    installed = metadata.version("invgray")
    assert invgray_cli.__version__ == installed
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith(f"invgray {installed} (model ")
