"""A stand-in for Oracle Database with a Data Guard standby, for tests only (never shipped).

Oracle Data Guard needs Enterprise Edition, which no test machine has; Oracle Database Free (the
docker-marked tests) has no standby. So the engine's decisions are tested against this:

- ``state.StandinState``: the roles, open modes, lags, gaps and data of each node, kept in a JSON
  file, so that the command-line stand-ins for dgmgrl and rman (``bin/``, run on an SSH lab host
  as the ``oracle`` OS user) and the SQL stand-in read and change the same world: a switchover
  swaps the roles, a failover leaves the old primary waiting for reinstatement, ``abort`` is
  ``shutdown abort``.
- ``database.StandinDatabase``: a stand-in for ``oracledb.connect``, passed to the real executor
  (``drills.executors.oracle.OracleSession``): it answers the checks' SQL from outputs recorded
  in ``fixtures/`` (each naming its source and release), and the role views from the state.
  Every error it raises is an oracledb exception with Oracle's own code and text, so the
  executor's translation is what the tests see.
- ``connector.StandinConnector``: the ``Connector`` a ``Runner`` or ``Targets`` takes, whose
  ``sql(name, node)`` is an ``OracleSession`` on the stand-in database.
"""
