"""A signal's handler held for a while. Python lets only the main thread set one, so
elsewhere (a caller's worker thread) nothing changes and the signal keeps what it had."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

Handler = Callable[[int, Any], Any] | int | signal.Handlers | None


@contextlib.contextmanager
def handling(sig: int, handler: Handler, *, then: Handler = None) -> Iterator[None]:
    """`handler` for `sig` meanwhile; afterwards the one from before, or `then`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(sig, handler)
    try:
        yield
    finally:
        signal.signal(sig, before if then is None else then)
