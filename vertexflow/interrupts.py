"""SIGINT and SIGTERM of a command-line process, from its first line to its exit.

``python -m vertexflow`` installs :data:`INTERRUPTS` before it imports the
command's modules (this module imports nothing of vertexflow, so it loads in
no time); the command line's job runner installs it too (the console script
starts there). Once installed it stays until the process exits, so no signal
meets the default action, which would kill the process with -15 (SIGTERM)
or raise KeyboardInterrupt at an arbitrary line (SIGINT), where the documented
status of an interrupted run is 130.

What a signal does depends on where the process is:

* while a command's async work runs (:meth:`Interrupts.receiving`), it is
  handed to the command on its event loop (a transfer: the first signal
  finishes what is in flight, the second aborts it; other commands: their
  work is cancelled, as Ctrl-C does by default);
* anywhere else (start-up: imports, options, the config file; a job's
  teardown) it is noted, and the next :meth:`Interrupts.check` raises
  KeyboardInterrupt: the command line checks before and after its start-up
  steps and before a job starts, so a signal that comes before the job
  exists ends the process with 130 and nothing begun;
* once the process is exiting (its exit functions), it is ignored: the
  status is decided, and the interpreter's finalization would otherwise give
  SIGTERM back its default action while it unloads the modules.

A signal that reaches the process before the interpreter runs its first line
of vertexflow (Python's own start-up, about 0.1 s) still kills it; nothing has
been done by then.
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The process's one handler for :data:`SIGNALS` and what it has seen."""

    def __init__(self) -> None:
        #: signals received since :meth:`install`
        self.received = 0
        #: the number of a signal noted and not yet acted upon (see :meth:`check`), else 0
        self.pending = 0
        self.installed = False
        self._deliver: Callable[[int], None] | None = None

    def install(self) -> None:
        """Take SIGINT and SIGTERM for the rest of the process (main thread only; again: nothing)."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        # the interpreter's finalization gives every signal back its default action (for SIGTERM:
        # death by the signal) before it unloads the modules; by the exit functions the status is known
        atexit.register(self._ignore)
        self.installed = True

    @staticmethod
    def _ignore() -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        deliver = self._deliver
        if deliver is not None:
            try:
                deliver(signum)
                return
            except RuntimeError:  # the job's loop has closed: the job is over, note it like any other
                pass
        self.pending = signum

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal was noted and not acted upon (once per signal)."""
        if self.pending:
            self.pending = 0
            raise KeyboardInterrupt

    @contextmanager
    def receiving(self, deliver: Callable[[int], None]) -> Iterator[None]:
        """Inside, each signal calls ``deliver(signum)`` (from the handler: it must only schedule work);
        one noted before is delivered on entry."""
        previous = self._deliver
        self._deliver = deliver
        try:
            if self.pending:
                signum, self.pending = self.pending, 0
                deliver(signum)
            yield
        finally:
            self._deliver = previous


#: the process's handler
INTERRUPTS = Interrupts()
