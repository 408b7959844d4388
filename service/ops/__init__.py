"""Operations: what `python -m service` does around the request path and never while answering a
request: start it (run, serve), migrate, check before serving, administer products, verify the
ledger, back up and restore, and the embedded PostgreSQL. The commands are a table (cli.py).

The request path (the rest of service/) never imports from here; this package imports from it."""
