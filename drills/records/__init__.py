"""Where runs are kept: the append-only journal, the hash-chained signed record store (SQLite or
PostgreSQL), the environment locks, signing keys and annotations."""
