"""Where the reference project (the quote-to-cash integration of `syncline demo`) is: inside the
installed package, where the wheel build puts it (`engine/reference/`, see setup.py), else at the
root of the source checkout this package runs from (an editable install)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import UsageError

FILES = ("syncline.yaml", "flows", "mappings", "policies", "metrics")


def reference_root() -> Path:
    """The reference project's directory; UsageError when neither place has it."""
    package = Path(__file__).resolve().parents[1]
    for root in (package / "reference", package.parent):
        if (root / "syncline.yaml").is_file() and (root / "flows").is_dir():
            return root
    raise UsageError(
        f"the reference project is missing from this installation ({package}): "
        "reinstall syncline, or pass --project with a project directory"
    )
