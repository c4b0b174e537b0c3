"""The base a plan compares with: another directory, or a git ref of the repository holding the
project, read with git itself (`ls-tree` and `cat-file`), never by checking out the working tree.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from engine.compiler import compile_loaded
from engine.compiler.plan import Plan
from engine.errors import DefinitionErrors, UsageError
from engine.loader import YAML_SUFFIXES, LoadedProject, load_files, load_project


class GitError(UsageError):
    """git refused: not a repository, an unknown ref, or git is missing."""


def load_base(project: Path, base: str) -> tuple[LoadedProject, str]:
    """Load `base`: an existing directory, else a git ref of the repository holding `project`.
    Returns the loaded project and a label for it (the directory, or `ref (commit)`)."""
    if Path(base).is_dir():
        return load_project(base), base
    return read_ref(project, base)


def compile_base(
    loaded: LoadedProject, environment: str, environ: Mapping[str, str]
) -> Plan | None:
    """The base compiled for the head's environment, or None when the base has no project or
    not this environment yet (then everything is new). Other errors raise DefinitionErrors."""
    if loaded.project is None and [d.code for d in loaded.diagnostics] == ["E_PROJECT"]:
        return None
    try:
        return compile_loaded(loaded, environment=environment, environ=environ)
    except DefinitionErrors as exc:
        if any(d.code == "E_ENV" for d in exc.diagnostics):
            return None
        raise


def read_ref(project: Path, ref: str) -> tuple[LoadedProject, str]:
    """The project as committed at `ref`: its YAML files read from git into memory."""
    cwd = project.resolve()
    try:
        top = Path(git(["rev-parse", "--show-toplevel"], cwd).decode().strip())
        prefix = git(["rev-parse", "--show-prefix"], cwd).decode().strip()
    except GitError as exc:
        raise GitError(
            f"--base '{ref}' is not a directory, and {project} is not in a git repository ({exc})"
        ) from None
    commit = resolve_ref(cwd, ref)
    blobs = _yaml_blobs(top, commit, prefix)
    contents = _cat_blobs(top, [sha for _, sha in blobs])
    files = {path[len(prefix) :]: contents[sha] for path, sha in blobs}
    return load_files(f"{ref}:{prefix}" if prefix else ref, files), f"{ref} ({commit[:12]})"


def resolve_ref(cwd: Path, ref: str) -> str:
    """The commit `ref` names, or a GitError saying it is neither a directory nor a ref."""
    try:
        out = git(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], cwd
        )
    except GitError:
        raise GitError(
            f"--base '{ref}' is neither a directory nor a git ref of the repository at {cwd}"
        ) from None
    return out.decode().strip()


def _yaml_blobs(top: Path, commit: str, prefix: str) -> list[tuple[str, str]]:
    """(path from the repository root, blob id) of every regular YAML file under `prefix`."""
    listing = git(
        ["ls-tree", "-r", "-z", "--full-tree", commit, "--", *([prefix] if prefix else [])], top
    )
    blobs = []
    for entry in listing.decode("utf-8", "surrogateescape").split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob" and mode in ("100644", "100755") and path.endswith(YAML_SUFFIXES):
            blobs.append((path, sha))
    return blobs


def _cat_blobs(top: Path, shas: list[str]) -> dict[str, bytes]:
    """The content of each blob, read in one `git cat-file --batch`."""
    if not shas:
        return {}
    out = git(["cat-file", "--batch"], top, "".join(f"{sha}\n" for sha in shas).encode())
    contents: dict[str, bytes] = {}
    at = 0
    for sha in shas:
        header_end = out.index(b"\n", at)
        _, _, size = out[at:header_end].decode().split()
        start = header_end + 1
        contents[sha] = out[start : start + int(size)]
        at = start + int(size) + 1
    return contents


def git(args: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    """Run git; its stdout, or a GitError carrying its message."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"cannot run git: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"git {args[0]} failed"
        raise GitError(message)
    return done.stdout
