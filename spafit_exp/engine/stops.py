"""Stopping a run cleanly: the first SIGINT/SIGTERM lets the loop finish its optimizer step, checkpoint and stop
(the run is recorded as interrupted and resumes when rerun); a second one stops at once.

Under submitit (launcher=slurm / submitit_local) the preemption / time-limit signal (USR2 unless
SUBMITIT_PREEMPT_SIGNAL says otherwise) is handled the same way first, then handed back to submitit's own handler
(`hand_back`), which requeues the job: the requeued job resumes from the checkpoint written at that very step."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

PREEMPT_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


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
    signals = [signal.SIGINT, signal.SIGTERM]
    if in_main and callable(signal.getsignal(PREEMPT_SIGNAL)):  # a job scheduler (submitit) wants to requeue on it
        signals.append(PREEMPT_SIGNAL)
    previous = {sig: signal.signal(sig, flag.handle) for sig in signals} if in_main else {}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def hand_back(signum: int) -> None:
    """After a run stopped on the preemption signal and recorded itself: call the handler that was installed for it
    before (submitit's checkpoint-and-requeue, which exits the process). Other signals, or no such handler: nothing."""
    handler = signal.getsignal(signum)
    if signum == PREEMPT_SIGNAL and callable(handler):
        handler(signum, None)
