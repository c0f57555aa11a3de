"""The command line, ``drctl``: the top layer. ``app`` holds the commands and ``main``; each other
module registers a group (records, ops, incident, verify)."""
