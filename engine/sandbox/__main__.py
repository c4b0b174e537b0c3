"""``python -m engine.sandbox``: run all the sandbox systems until interrupted.

Ports default to 9101 (crm), 9102 (erp), 9103 (billing), 9104 (support), 9105 (chat),
9106 (erp-cloud).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading

from engine.sandbox.suite import DEFAULT_PORTS, Sandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, dest=f"{name}_port")
    parser.add_argument("--crm-webhook-url", help="where the CRM sends opportunity.closed_won")
    parser.add_argument("--billing-webhook-url", help="where billing sends its Stripe events")
    parser.add_argument("--erp-webhook-url", help="where the ERP sends payment.applied")
    args = parser.parse_args(argv)
    sandbox = Sandbox(
        host=args.host,
        ports={name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS},
        crm={"webhook_url": args.crm_webhook_url},
        erp={"webhook_url": args.erp_webhook_url},
        billing={"webhook_url": args.billing_webhook_url},
    )
    # SIGTERM stops the servers cleanly, like Ctrl-C
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with sandbox:
        print(json.dumps(sandbox.urls, indent=2), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
