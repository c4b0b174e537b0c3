"""Recorded payloads for `syncline plan --samples DIR`, and the redaction applied to what a
preview prints.

A sample directory holds payloads in two ways (both may be mixed):

- `DIR/<flow name or event type>/<anything>.json|.yaml|.yml`: the file is one payload (the flow's
  `data`); a `.jsonl` file holds one payload per line.
- `DIR/<anything>.json|.yaml|.yml|.jsonl` at the top: each payload is a wrapper
  `{flow: NAME, data: {...}}` or `{trigger: EVENT_TYPE|/webhook/path, data: {...}}`.

Samples are untrusted input like any payload: the directory and every file in it (links
resolved) stay inside the project, each file is a regular file read up to MAX_SAMPLE_BYTES, and
nesting is bounded before a parser recurses.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.errors import UsageError
from engine.nesting import too_deep

SUFFIXES = (".json", ".yaml", ".yml", ".jsonl")
MAX_SAMPLE_BYTES = 16 * 1024 * 1024  #: the largest sample file (a JSON-lines file holds many)
# Field names masked by default: people's emails, names, addresses and phones, and credentials.
DEFAULT_REDACT = ("*email*", "*name*", "*street*", "*address*", "*phone*", "*token*",
                  "*secret*", "*password*", "*api_key*", "*ssn*")
REDACTED = "[redacted]"
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_TOKEN = re.compile(r"\b(sk|pk|rk|whsec)_(live|test)_\w+|\bBearer\s+\S+", re.IGNORECASE)


class SampleError(UsageError):
    """A sample file that cannot be read: `FILE:LINE:COL: error[E_SAMPLE] message`."""

    def __init__(self, path: Path, line: int, col: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{col}: error[E_SAMPLE] {message}")


@dataclass(frozen=True)
class Sample:
    source: str          # FILE, or FILE:LINE for JSON lines
    target: str          # the flow name, event type or trigger path it belongs to
    data: Any
    # what each operation answered in the sample's recorded run ("system.operation" -> the
    # responses, in order: {status, body, headers}); None for samples written by hand
    responses: Mapping[str, list[dict[str, Any]]] | None = None


def load_samples(directory: Path, root: Path | None = None) -> list[Sample]:
    """Every sample under `directory`, in file-name order. With `root` (the project), the
    directory and its files must lie inside it. Raises SampleError, located."""
    if not directory.is_dir():
        raise UsageError(f"--samples {directory}: not a directory")
    if root is not None and not directory.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"--samples {directory}: outside the project {root} (samples are "
                         "committed with the definitions they preview)")
    samples: list[Sample] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.suffix not in SUFFIXES or any(part.startswith(".") for part in path.parts):
            continue
        folder = path.parent.relative_to(directory).parts
        for source, payload in _payloads(path, _read(path, root)):
            if folder:
                samples.append(Sample(source, folder[0], payload))
            else:
                samples.append(_unwrap(path, source, payload))
    return samples


def _read(path: Path, root: Path | None) -> str:
    real = path.resolve()
    if root is not None and not real.is_relative_to(root.resolve()):
        raise SampleError(path, 1, 1, "links to a file outside the project")
    try:
        with real.open("rb") as handle:
            content = handle.read(MAX_SAMPLE_BYTES + 1)
    except OSError as exc:
        raise SampleError(path, 1, 1, f"cannot be read: {exc.strerror}") from None
    if len(content) > MAX_SAMPLE_BYTES:
        raise SampleError(path, 1, 1, f"is larger than {MAX_SAMPLE_BYTES:,} bytes")
    return content.decode("utf-8", errors="replace")


def _payloads(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    if (deep := too_deep(text)) is not None:
        raise SampleError(path, deep[0], deep[1], "nests too deeply")
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{path}:{number}", _json(path, line, number)
    elif path.suffix == ".json":
        yield str(path), _json(path, text, 0)
    else:
        try:
            yield str(path), yaml.load(text, Loader=yaml.CSafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            raise SampleError(path, at[0], at[1], f"not YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise SampleError(path, 1, 1, f"not YAML: {exc}") from None


def _json(path: Path, text: str, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SampleError(path, line or exc.lineno, exc.colno, f"not JSON: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # too deep for the parser; too many digits
        raise SampleError(path, line or 1, 1, f"not readable JSON: {exc}") from None


def _unwrap(path: Path, source: str, payload: Any) -> Sample:
    if isinstance(payload, dict) and "data" in payload:
        target = payload.get("flow") or payload.get("trigger")
        if isinstance(target, str) and target:
            return Sample(source, target, payload["data"])
    raise SampleError(path, int(source.rsplit(":", 1)[1]) if source != str(path) else 1, 1,
                      "a sample at the top of the directory needs {flow: NAME, data: ...} or "
                      "{trigger: EVENT|PATH, data: ...}; or put it in a folder named after "
                      "its flow")


class Redactor:
    """Masks values of fields whose name matches a pattern (fnmatch, case-insensitive), and
    emails and bearer/API tokens anywhere in strings."""

    def __init__(self, patterns: Iterable[str] | None = None) -> None:
        self.patterns = tuple(p.lower() for p in (DEFAULT_REDACT if patterns is None else patterns))

    def hides(self, path: str) -> bool:
        """Whether any field name on a dotted `path` is a redacted one."""
        names = (part.split("[", 1)[0].lower() for part in path.split("."))
        return any(fnmatch.fnmatchcase(n, p) for n in names if n for p in self.patterns)

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: REDACTED if self.hides(str(k)) else self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def text(self, text: str) -> str:
        return _TOKEN.sub(REDACTED, _EMAIL.sub(REDACTED, text))
