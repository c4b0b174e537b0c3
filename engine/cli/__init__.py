"""The `syncline` command: parses arguments, calls the stages and the use cases of
`engine.commands`, prints. Exit codes: 0 success, 1 the checked thing failed (invalid
definitions, failing tests), 2 usage error.

    definitions.py  validate, test, graph, owners, init
    gitops.py       plan, promote, status, samples export
    runs.py         run, runs list|show|resume|retry|cancel|replay, shadow report
    serving.py      serve, worker, demo
    audit.py        audit [verify], tokens hash|new
    reconcile.py    reconcile
    operations.py   flows|systems pause|resume, store backup|restore, owners --codeowners
"""

from __future__ import annotations

import click

from engine.cli import audit, definitions, gitops, operations, reconcile, runs, serving


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="syncline")
def main() -> None:
    """Syncline: declarative integration-as-code for quote-to-cash."""
    from engine.logs import quiet

    quiet()  # commands report in their own words; serve, worker and demo configure logging


for _command in (
    definitions.validate,
    definitions.test,
    definitions.graph,
    definitions.owners,
    definitions.init,
    serving.serve,
    serving.worker,
    gitops.plan_command,
    gitops.promote,
    gitops.status,
    gitops.samples,
    runs.run_command,
    runs.runs,
    runs.shadow,
    reconcile.reconcile,
    operations.flows,
    operations.systems,
    operations.store_group,
    serving.demo,
    audit.audit,
    audit.tokens,
):
    main.add_command(_command)

__all__ = ["main"]
