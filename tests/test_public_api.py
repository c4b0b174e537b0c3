"""The public API is exactly what `engine.__all__` lists, each name documented (as httpx checks)."""

from __future__ import annotations

import engine


def test_all_names_are_exported_and_documented() -> None:
    for name in engine.__all__:
        value = getattr(engine, name)
        assert value.__doc__, f"engine.{name} has no docstring"


def test_no_public_name_is_left_out_of_all() -> None:
    public = {n for n in vars(engine) if not n.startswith("_") and n != "annotations"}
    modules = {n for n in public if type(getattr(engine, n)).__name__ == "module"}
    assert public - modules == set(engine.__all__)


def test_import_direction_compiler_never_imports_runtime_or_server() -> None:
    """loader -> model -> compiler -> runtime/store -> server -> commands/cli (with gitops, the
    demo and the sandbox systems the CLI runs): a module never imports from a stage to its
    right."""
    import pathlib
    import re

    root = pathlib.Path(engine.__file__).parent
    stages = {"loader": 0, "yaml_nodes": 0, "model": 1, "compiler": 2, "runtime": 3, "store": 3,
              "server": 4, "gitops": 5, "sandbox": 5, "commands": 5, "demo": 5, "cli": 6}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).parts
        stage = stages.get(rel[0].removesuffix(".py"))
        if stage is None:
            continue
        for target in re.findall(r"^\s*(?:from|import) engine\.(\w+)", path.read_text(), re.M):
            if target in stages:
                assert stages[target] <= stage, f"{path.relative_to(root)} imports engine.{target}"


def test_every_diagnostic_code_is_documented_in_the_readme() -> None:
    import pathlib
    import re

    root = pathlib.Path(engine.__file__).parent
    emitted = {
        code
        for path in root.rglob("*.py")
        for code in re.findall(r"[\"']([EW]_[A-Z_]+)[\"']", path.read_text())
    }
    readme = (root.parent / "README.md").read_text()
    assert emitted and not {c for c in emitted if f"`{c}`" not in readme}
