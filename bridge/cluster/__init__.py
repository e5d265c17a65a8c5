"""The fleet: a registry of live calls and a bus between nodes (`base.py` the interface, `local.py` the
embedded default, `redis.py` the fleet on Redis)."""
