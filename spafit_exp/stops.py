"""Stopping a run cleanly: the first SIGINT/SIGTERM lets the loop finish its optimizer step, checkpoint and stop
(the run is recorded as interrupted and resumes when rerun); a second one stops at once."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager


class StopFlag:
    """First SIGINT/SIGTERM: finish the optimizer step, checkpoint, stop. Second one: stop now."""

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGINT

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop now)", file=sys.stderr)


@contextmanager
def graceful_stop():
    flag = StopFlag()
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, flag.handle) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
