"""drctl: a disaster-recovery drill orchestrator.

The package is a typed core with no I/O (playbook, environment, journal events, record,
objectives) and, at its edges, executors that touch the world (``drills.executors``).
"""

__version__ = "0.1.0"
