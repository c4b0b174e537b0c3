"""`python -m engine.cli ...`, the same as `syncline ...`."""

from engine.cli import main

main()
