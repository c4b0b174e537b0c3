"""The wheel ships the reference project (syncline.yaml, flows/, mappings/, policies/, metrics/ at
the root of the repository, where SPEC section 1 keeps them) as `engine/reference/`, so `syncline
demo` and `syncline init --from reference` work from a plain `pip install .`. Everything else is
declared in pyproject.toml; an editable install reads the files from the checkout instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

REFERENCE = ("syncline.yaml", "flows", "mappings", "policies", "metrics")


class BuildWithReference(build_py):
    """build_py, plus a copy of the reference project into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "engine" / "reference"
        shutil.rmtree(target, ignore_errors=True)
        for name in REFERENCE:
            source = Path(__file__).parent / name
            if source.is_dir():
                shutil.copytree(source, target / name,
                                ignore=shutil.ignore_patterns("__pycache__", ".*"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildWithReference})
