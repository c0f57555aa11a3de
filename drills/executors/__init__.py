"""Executors: the only code that touches the outside world.

One module per kind (``local``, ``sql``; ``ssh`` and ``http`` follow the same shape), and in each
module one place where the library's errors become ours (``drills.model.errors``).
"""

from drills.executors.local import CommandResult, LocalExecutor

__all__ = ["CommandResult", "LocalExecutor"]
