"""The CLI's use cases, one module each; `engine.cli` parses arguments and prints what they
return. They sit with the CLI at the right end of the pipeline: they may import any stage, and
no stage imports them.

    testing.py    `syncline test`: every test of a plan; Mapping tests
    results.py    test results, fixtures, diffs (what Mapping and Flow tests share)
    flowtests.py  `syncline test`: Flow tests through the real runtime against stubbed Systems
    harness.py    the one local runtime (a temporary store unless told otherwise), used by
                  flow tests and `syncline run`
    runs.py       `syncline run` and `syncline runs ...` on the project's store
    remote.py     `syncline runs ... --url`: the same through a running server's admin API
    switches.py   `syncline flows|systems pause|resume`, on the store or through a server
    graph.py      `syncline graph`: mermaid, dot, JSON
    init.py       `syncline init`: a new project, from the reference one or a minimal one
    reconcile.py  `syncline reconcile NAME`: a Reconciliation now, here or on a server
"""
