"""The engine: the runner and its pure decisions (``policy``), the targets and executors it is
given (``targets``), the catalogues engines register into (``catalogue``), roles, measurements,
human steps, and the loading and validation of playbooks. It knows no database: each database
engine lives in ``drills.engines`` and registers itself."""
