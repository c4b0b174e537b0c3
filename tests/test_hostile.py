"""Hostile definitions: every command answers every case of tests/corpus/hostile with located
errors, never a traceback, a hang or a signal.

Each folder is a project; its expected.txt (if any) lists `CODE file:line` that `validate` must
report. Cases too large or too odd to commit are completed here (`_materialise`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from engine.compiler import compile_project

CORPUS = Path(__file__).parent / "corpus" / "hostile"
DRIVER = Path(__file__).parent / "hostile_driver.py"


def _materialise(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(CORPUS / name, root, symlinks=True)
    defs = root / "defs"
    defs.mkdir(exist_ok=True)  # git keeps no empty folder: a clean clone of yaml_depth has none
    if name == "yaml_depth":  # 200,000 levels: the C parser overflowed its stack (SIGSEGV)
        (defs / "flow.yaml").write_text("a: " + "[" * 200_000 + "]" * 200_000 + "\n")
        (defs / "block.yaml").write_text("- " * 200_000 + "x\n")
        indented = "".join(" " * i + "b:\n" for i in range(1, 1300))
        (defs / "indent.yaml").write_text("a:\n" + indented)
    if name == "fixture_links":  # links that leave the project, one to an endless device
        (defs / "fixtures").mkdir()
        (defs / "fixtures" / "zero.json").symlink_to("/dev/zero")
        (defs / "fixtures" / "passwd.yaml").symlink_to("/etc/passwd")
    return root


def _expected(root: Path) -> set[str]:
    file = root / "expected.txt"
    if not file.exists():
        return set()
    return {f"{where}: error[{code}]" for code, where in
            (line.split() for line in file.read_text().splitlines() if line.strip())}


def test_every_command_answers_every_hostile_definition_without_a_traceback(
        tmp_path: Path) -> None:
    cases = sorted(p.name for p in CORPUS.iterdir() if (p / "syncline.yaml").exists())
    roots = [_materialise(name, tmp_path) for name in cases]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run([sys.executable, str(DRIVER), *map(str, roots)], capture_output=True,
                          text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, f"signal or crash {done.returncode}: {done.stderr[-2000:]}"
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 5 * len(roots)
    for result in results:
        where = f"{Path(result['root']).name}: syncline {result['command']}"
        assert not result["traceback"], f"{where}\n{result['traceback']}"
        assert "Traceback" not in result["output"], where
        assert result["exit"] in (0, 1), f"{where} exited {result['exit']}"
        expected = _expected(Path(result["root"]))
        if result["command"] == "validate":
            reported = {line.split(":", 3)[0] + ":" + line.split(":", 3)[1] + ": "
                        + line.split(": ", 1)[1].split(" ", 1)[0]
                        for line in result["output"].splitlines() if ": error[" in line}
            assert reported == expected, f"{where}\n{result['output']}"
        if expected:
            assert result["exit"] == 1, where


def test_a_flow_replayable_by_an_untimed_sender_without_an_idempotency_key_is_warned(
        tmp_path: Path) -> None:
    root = _materialise("routes", tmp_path)
    defs = root / "defs" / "f.yaml"
    kept = defs.read_text().split("---\n")
    defs.write_text("---\n".join([kept[0], kept[-1]]))   # the System and the one valid flow
    (warning,) = compile_project(root, environ={}).warnings
    assert (warning.code, warning.location.line) == ("W_REPLAY", 12)
    assert "idempotencyKey" in warning.message
    defs.write_text(defs.read_text().replace("  steps:", "  idempotencyKey: data.id\n  steps:"))
    assert compile_project(root, environ={}).warnings == ()
