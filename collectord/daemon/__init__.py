"""The collector daemon, one module a job.

* ``loop.py``: the ``Daemon``: two sockets, the main loop, signals;
* ``lifecycle.py``: an experiment's life, written once: open an output folder
  (resume or recover what a crash left), admit messages, save, begin the next;
* ``barrier.py``: the stop barrier: whom a stop waits for, and until when;
* ``durability.py``: the journal made durable in the background, and the
  confirmations (``sync`` replies) that follow;
* ``control.py``: the control endpoint's dispatch (the commands themselves are
  in ``collectord/commands``).
"""

from .control import ReplyTo
from .lifecycle import Lifecycle, Opened, Start
from .loop import Daemon

__all__ = ["Daemon", "Lifecycle", "Opened", "ReplyTo", "Start"]
