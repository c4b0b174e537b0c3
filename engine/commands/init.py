"""`syncline init [DIR] [--from reference|minimal]`: write a new project to start from.

`reference` copies the quote-to-cash integration `syncline demo` runs; `minimal` writes a tiny
project (a Schema, a Mapping with a test, a System and a Flow with a test) that validates and
whose tests pass. Nothing is overwritten: a directory that already holds a project is refused.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from engine.commands.reference import FILES, reference_root
from engine.errors import UsageError

TEMPLATES = ("reference", "minimal")

MINIMAL = {
    "syncline.yaml": """\
apiVersion: syncline/v1
kind: Project
metadata: {name: NAME, owner: my-team}
spec:
  paths: [flows, mappings]
  environments:
    dev:
      vars: {ERP_URL: "http://127.0.0.1:9102"}
""",
    "mappings/order.yaml": """\
apiVersion: syncline/v1
kind: Schema
metadata: {name: order, version: 1, owner: my-team}
spec:
  key: order_id
  jsonSchema:
    type: object
    required: [order_id, amount, currency]
    properties:
      order_id: {type: string}
      amount: {type: number}
      currency: {type: string}
---
apiVersion: syncline/v1
kind: Mapping
metadata: {name: deal-to-order, version: 1, owner: my-team}
spec:
  target: order@1
  fields:
    order_id: Id
    amount: Amount
    currency: {expr: Currency, default: USD}
  tests:                             # run by `syncline test`
    - name: a deal without a currency is in USD
      input: {Id: D-1, Amount: 100}
      expect: {order_id: D-1, amount: 100, currency: USD}
    - name: a deal without an id is refused
      input: {Amount: 100}
      expectError: REQUIRED          # order_id, required by order@1, has no value
""",
    "flows/erp.yaml": """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: my-team}
spec:
  baseUrl: ${env.ERP_URL}           # per environment, from syncline.yaml
  idempotencyHeader: Idempotency-Key
  operations:
    create-order: {method: POST, path: /orders}
""",
    "flows/deal-won.yaml": """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: deal-won, version: 1, owner: my-team}
spec:
  trigger: {event: com.example.deal.won}   # POST a CloudEvent of this type to /events
  idempotencyKey: data.Id
  steps:
    - id: order
      map: deal-to-order
    - id: erp
      call: {system: erp, operation: create-order, body: steps.order}
  output: steps.erp.body
  tests:                             # the real runtime, with the Systems stubbed
    - name: a won deal becomes an ERP order
      input: {Id: D-1, Amount: 100, Currency: EUR}
      responses:
        erp.create-order: {status: 201, body: {id: SO-1}}
      expect:
        state: succeeded
        calls:
          - system: erp
            operation: create-order
            body: {order_id: D-1, amount: 100, currency: EUR}
        output: {id: SO-1}
""",
}


def init_project(directory: Path, template: str = "minimal") -> list[Path]:
    """Write the `template` project into `directory` (created if needed); the files written.
    UsageError for an unknown template or a directory that already holds a project."""
    if template not in TEMPLATES:
        raise UsageError(f"unknown template '{template}' (one of {', '.join(TEMPLATES)})")
    if (directory / "syncline.yaml").exists():
        raise UsageError(f"{directory} already holds a project (syncline.yaml); nothing written")
    if template == "reference":
        return _copy_reference(directory)
    _refuse_clashes(directory, MINIMAL)
    written = []
    for name, text in MINIMAL.items():
        path = directory / name
        if name == "syncline.yaml":
            text = text.replace("NAME", _project_name(directory))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _copy_reference(directory: Path) -> list[Path]:
    root = reference_root()
    _refuse_clashes(directory, FILES)
    directory.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", ".*")
    for name in FILES:
        if (root / name).is_dir():
            shutil.copytree(root / name, directory / name, ignore=ignore)
        else:
            shutil.copy2(root / name, directory / name)
    return [directory / name for name in FILES]


def _refuse_clashes(directory: Path, names: Iterable[str]) -> None:
    clashes = [directory / name for name in names if (directory / name).exists()]
    if clashes:
        raise UsageError(f"{clashes[0]} exists; nothing written")


def _project_name(directory: Path) -> str:
    """The directory's name as a resource name (lowercase letters, digits, '-' and '.')."""
    name = re.sub(r"[^a-z0-9.-]+", "-", directory.resolve().name.lower()).strip("-.")
    return name or "my-integration"
