"""invgray from shell scripts: pipes, JSON reports against the README's key table,
help, completion and --quiet."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from invgray_cli.app.cli import app
from invgray_cli.app.reports import KEYS

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "kodim23.png"
GOLDEN = sorted((ROOT / "tests" / "golden").glob("*/*.residual.bin"))
INVGRAY = f"{shlex.quote(sys.executable)} -m invgray_cli"
runner = CliRunner()


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True)


def test_the_pipe_round_trips_to_the_same_pixels_as_files(tmp_path: Path) -> None:
    piped = _shell(f"cat {shlex.quote(str(SAMPLE))} | {INVGRAY} encode - --embed -o - | "
                   f"{INVGRAY} decode - -o - > a.color.png", tmp_path)
    assert piped.returncode == 0, piped.stderr
    files = _shell(f"{INVGRAY} encode {shlex.quote(str(SAMPLE))} --embed -o a.gray.jpg && "
                   f"{INVGRAY} decode a.gray.jpg -o b.color.png", tmp_path)
    assert files.returncode == 0, files.stderr
    piped_pixels = np.asarray(Image.open(tmp_path / "a.color.png"))
    assert piped_pixels.shape == (512, 768, 3)
    assert np.array_equal(piped_pixels, np.asarray(Image.open(tmp_path / "b.color.png")))


def test_either_half_of_a_pair_from_stdin(small_png: Path, tmp_path: Path) -> None:
    assert invoke("encode", small_png, "-o", tmp_path / "p.gray.jpg").exit_code == 0
    gray, residual = tmp_path / "p.gray.jpg", tmp_path / "p.residual.bin"
    expected = invoke("decode", gray, residual, "-o", tmp_path / "ref.png")
    assert expected.exit_code == 0
    reference = np.asarray(Image.open(tmp_path / "ref.png"))
    from_stdin = runner.invoke(app, ["decode", "-", str(residual), "-o", "-", "--format", "webp"],
                               input=gray.read_bytes())
    assert from_stdin.exit_code == 0, from_stdin.stderr
    with Image.open(io.BytesIO(from_stdin.stdout_bytes)) as image:
        assert image.format == "WEBP" and np.array_equal(np.asarray(image.convert("RGB")), reference)
    residual_piped = runner.invoke(app, ["decode", str(gray), "-", "-o", str(tmp_path / "r.png")],
                                   input=residual.read_bytes())
    assert residual_piped.exit_code == 0, residual_piped.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), reference)


def test_pipe_misuse_is_a_usage_error(small_png: Path) -> None:
    assert invoke("encode", small_png, "-o", "-").exit_code == 2  # two outputs, one stream
    assert invoke("decode", "-").exit_code == 2  # no name for the output
    assert invoke("decode", "-", "-").exit_code == 2
    assert invoke("decode", small_png, "-o", "x.png", "--format", "jpg").exit_code == 2


def test_binary_stdout_to_a_terminal_is_refused(small_png: Path) -> None:
    primary, terminal = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "invgray_cli", "encode", str(small_png), "--embed", "-o", "-"],
                                stdout=terminal, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    finally:
        os.close(terminal)
        os.close(primary)
    assert result.returncode == 2 and "terminal" in result.stderr
    assert not small_png.with_name("photo.gray.jpg").exists()


def _documented_keys() -> dict[str, list[str]]:
    """command -> keys, in the order of the README's JSON key table."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### JSON keys", 1)[1].split("\n\n", 2)[1]
    keys: dict[str, list[str]] = {}
    for row in table.splitlines()[2:]:
        match = re.match(r"\| `(\w+)` \| ([a-z, ]+) \|", row)
        assert match, row
        for command in match.group(2).split(", "):
            keys.setdefault(command, []).append(match.group(1))
    return keys


def test_readme_documents_every_key() -> None:
    documented = _documented_keys()
    assert {command: set(keys) for command, keys in documented.items()} == \
        {command: set(keys) for command, keys in KEYS.items()}


def _objects(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_objects_have_the_documented_keys(small_png: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    result = invoke("encode", small_png, junk, "--json", "--embed")
    assert result.exit_code == 1  # one input failed: exit status as without --json
    reports = _objects(result.stdout)
    assert [r["status"] for r in reports] == ["ok", "error"]
    assert reports[1]["input"] == str(junk) and reports[1]["error"] and reports[1]["width"] is None
    for report in reports:
        assert list(report) == list(KEYS["encode"])
    ok = reports[0]
    assert ok["embedded"] is True and ok["residual"] is None and ok["level"] == "default"
    assert ok["engine"] == "onnxruntime" and ok["width"] == 203 and ok["height"] == 157
    gray = Path(ok["gray"])  # the gray image, the residual and the embedding's few bytes of framing
    assert 0 < gray.stat().st_size - ok["gray_bytes"] - ok["residual_bytes"] < 64

    result = invoke("decode", gray, "--json", "--compare", small_png)
    assert result.exit_code == 0, result.output
    (decoded,) = _objects(result.stdout)
    assert list(decoded) == list(KEYS["decode"])
    assert decoded["psnr"] > 25 and decoded["format"] == "png" and decoded["output_bytes"] > 0
    again = invoke("decode", gray, "--json", "--skip-existing")
    assert _objects(again.stdout)[0]["status"] == "skipped"


def test_info_json_on_v1_golden_files_and_new_ones(small_png: Path) -> None:
    assert invoke("encode", small_png, "--embed").exit_code == 0
    fresh = small_png.with_name("photo.gray.jpg")
    result = invoke("info", *GOLDEN, fresh, "--json")
    assert result.exit_code == 0, result.output
    reports = _objects(result.stdout)
    assert len(reports) == len(GOLDEN) + 1
    for report in reports:
        assert list(report) == list(KEYS["info"]) and report["status"] == "ok"
        assert report["format_version"] >= 1 and report["model_bundled"] is True
    assert {r["format_version"] for r in reports[:-1]} == {1, 2, 3}  # golden files of v1, v1.1 and the refinement layer
    assert reports[-1]["format_version"] == 2
    assert reports[-1]["embedded"] is True and reports[-1]["width"] == 203
    assert any(r["monochrome"] for r in reports) and any(r["alpha"] for r in reports)
    missing = invoke("info", small_png.with_name("missing.bin"), "--json")
    assert missing.exit_code == 1 and _objects(missing.stdout)[0]["error"] == "no such file"


def test_quiet_prints_nothing_on_success(small_png: Path) -> None:
    result = invoke("encode", small_png, "--quiet")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    result = invoke("encode", small_png, "--quiet")  # outputs exist: an error, still shown
    assert result.exit_code == 1 and "already exists" in result.stderr


def test_help_reads_like_a_unix_tool() -> None:
    short, long = invoke("-h"), invoke("--help")
    assert short.exit_code == 0 and short.stdout == long.stdout
    for command in ("encode", "decode", "info", "embed", "extract"):
        text = invoke(command, "-h").stdout
        assert "<bool>" not in text, command
    encode_help = invoke("encode", "-h").stdout
    assert re.search(r"^\s+--embed\s+Put the residual", encode_help, re.MULTILINE)
    assert "--install-completion" in long.stdout


def test_shell_completion_script() -> None:
    result = subprocess.run([sys.executable, "-m", "invgray_cli", "--show-completion", "bash"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "complete" in result.stdout and "invgray" in result.stdout
