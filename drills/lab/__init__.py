"""The labs drctl brings up on this machine: one host (``onehost``) or two sites reached only
over SSH (``twosite``), each with a HIS stand-in (``his``)."""
