"""A plain (non-editable) install works from any directory: the wheel carries the reference
project and the sandbox systems, so `syncline init`, `validate`, `test` and `demo` need no
source checkout.

The wheel is built from this checkout (`pip wheel . --no-deps`) and installed with `--no-deps`
into a fresh venv; its dependencies come from the environment running the tests (a `.pth` line
adding that site-packages after the venv's own), so the test needs no package index."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv with the syncline wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info into the tree
    skip = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".syncline")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skip))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "-w", str(tmp / "dist")],
                   check=True, capture_output=True, cwd=tmp, timeout=300)
    (wheel,) = (tmp / "dist").glob("syncline-*.whl")
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    bin_dir = env / "bin"
    python = bin_dir / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    (Path(site.stdout.strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)],
                   check=True, capture_output=True, cwd=tmp, timeout=300)
    return bin_dir


def syncline(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "syncline"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_installed_wheel_runs_without_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import engine; print(engine.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert not where.stdout.startswith(str(ROOT)), where.stdout  # the wheel, not the checkout
    for template in ("minimal", "reference"):
        done = syncline(installed, tmp_path, "init", template, "--from", template)
        assert done.returncode == 0, done.stdout + done.stderr
        done = syncline(installed, tmp_path, "validate", template)
        assert done.returncode == 0 and done.stdout.startswith("ok: "), done.stdout + done.stderr
        done = syncline(installed, tmp_path, "test", template)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.rstrip().endswith("passed") and "failed" not in done.stdout
    copied = sorted(p.relative_to(tmp_path / "reference").as_posix()
                    for p in (tmp_path / "reference").rglob("*.yaml"))
    shipped = sorted(p.relative_to(ROOT).as_posix()
                     for name in ("flows", "mappings", "policies", "metrics")
                     for p in (ROOT / name).rglob("*.yaml"))
    assert copied == sorted([*shipped, "syncline.yaml"])


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo(installed: Path, tmp_path: Path) -> None:
    done = syncline(installed, tmp_path, "demo", "--events", "4", "--format", "json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(done.stdout)["reconciliation"]["ok"]


def test_init_refuses_to_overwrite_a_project(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from engine.cli import main

    (tmp_path / "syncline.yaml").write_text("kind: Project\n")
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert "already holds a project (syncline.yaml); nothing written" in result.output
    assert (tmp_path / "syncline.yaml").read_text() == "kind: Project\n"
    (tmp_path / "syncline.yaml").unlink()
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "erp.yaml").write_text("mine\n")
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 2 and "flows/erp.yaml exists; nothing written" in result.output
    assert not (tmp_path / "syncline.yaml").exists()
