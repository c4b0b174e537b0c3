"""The runtime: executes a Plan durably (see `engine.runtime.runtime.Runtime`)."""

from engine.runtime.executor import Observer
from engine.runtime.runtime import MISSING, ApiResult, EventMeta, Runtime

__all__ = ["MISSING", "ApiResult", "EventMeta", "Observer", "Runtime"]
