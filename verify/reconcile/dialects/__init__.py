"""One module per engine: its SQL as pure functions, and its ``Session`` (``verify.reconcile.
model``) on a connection from the executors. ``verify.reconcile.compare.session_class`` picks one
by engine name; the Oracle one (and python-oracledb) is imported only when asked for."""
