"""The local production-like topology (haproxy, service instances, PgBouncer): see cluster.py."""
