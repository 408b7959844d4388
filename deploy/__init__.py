"""`just cluster`: haproxy, service instances and PgBouncer on one machine (deploy.cluster)."""
