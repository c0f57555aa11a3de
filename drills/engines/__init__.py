"""Database engines. Each subpackage has ``register(catalogue)``, which adds its actions, its
checks and its role observer to the catalogue (``drills.engine.catalogue``). The engine layer
never imports an engine: it finds them here, and through ``drctl.engines`` entry points."""
