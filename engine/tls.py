"""The one TLS context of the process: `tls_context()`.

Loading the CA certificates costs 50-80 ms of CPU on this machine, and httpx loads them again for
every client or transport built without a context: each System's connections, each OAuth2 token
fetch, each command's client. An SSLContext is safe to share, so every HTTPS connection the
process makes verifies against this one, built on first use."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The default verifying context (httpx's: certifi's CA bundle, or SSL_CERT_FILE /
    SSL_CERT_DIR as they were at the first call)."""
    return httpx.create_ssl_context()
