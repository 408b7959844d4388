"""The bench suite: dataset D, locust scenarios, the limits (pgbench, wrk), reports, profiles."""
