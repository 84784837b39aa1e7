"""Stop training cleanly when a batch scheduler says time is up, so the next submission resumes.

SLURM ends a job at its time limit, or when it is preempted, by sending SIGTERM to every process
of the job and SIGKILL ``KillWait`` seconds later (30 s by default); ``sbatch --signal=USR1@120``
adds a SIGUSR1 two minutes before the limit. Without a handler Python dies on the TERM and every
step since the last periodic checkpoint is lost, once per time limit.

:func:`listen` installs handlers for SIGTERM and SIGUSR1 that only record the signal. The training
loop polls :attr:`Listener.requested` before each batch; when it is set the loop writes its
checkpoint at that batch boundary and calls :meth:`Listener.exit`, which raises :class:`Preempted`
(a ``SystemExit`` with status :data:`EXIT_CODE`). Snakemake treats any non-zero status as a failure
and, with ``retries``, submits the job again; the new job resumes from the checkpoint and ends
bit-for-bit where an uninterrupted run ends (on the CPU; tested).

A handler only defers the signal while a listener is alive (a running ``train()``). Otherwise it
restores the handler it replaced and re-delivers the signal, so a process that is not training
(data loading, saving results, a test runner) still ends on SIGTERM as usual.
"""

from __future__ import annotations

import os
import signal
import threading
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

#: exit status after a checkpoint at a signal: EX_TEMPFAIL, "try again later"
EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_listeners: weakref.WeakSet[Listener] = weakref.WeakSet()
_previous: dict[int, Any] = {}


class Preempted(SystemExit):
    """Raised once the checkpoint is written: the process exits with :data:`EXIT_CODE`."""

    def __init__(self, signum: int):
        super().__init__(EXIT_CODE)
        self.signum = signum


class Listener:
    """The signals received while one training run is in progress."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        """True once SIGTERM or SIGUSR1 arrived: save the checkpoint and call :meth:`exit`."""
        return self.signum is not None

    def exit(self, where: str, log: Callable[[str], None] | None = print) -> NoReturn:
        """Say what happened (``where`` names the checkpoint and position) and end the process."""
        assert self.signum is not None, "exit() without a signal"
        if log:
            log(f"received {signal.Signals(self.signum).name}: checkpoint written ({where}); exiting with "
                f"status {EXIT_CODE} so that the job is retried and resumes from it")
        raise Preempted(self.signum)


def listen() -> Listener | None:
    """A listener for the caller's training run; None where signals cannot be handled here
    (not the main thread), in which case signals keep their usual effect."""
    if threading.current_thread() is not threading.main_thread():
        return None
    for signum in SIGNALS:
        if signal.getsignal(signum) is not _handle:
            _previous[signum] = signal.signal(signum, _handle)
    listener = Listener()
    _listeners.add(listener)
    return listener


def _handle(signum: int, frame: Any) -> None:
    listeners = list(_listeners)
    for listener in listeners:
        if listener.signum is None:
            listener.signum = signum
    if listeners:
        return
    # nobody is training: behave as if this module had never touched the signal
    previous = _previous.get(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        os.kill(os.getpid(), signum)
