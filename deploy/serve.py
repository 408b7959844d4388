"""One cluster instance: what `python -m service run` does once its database is migrated.

The cluster migrates once, directly on PostgreSQL (deploy/cluster.py), before any instance starts:
migrations hold a session-level advisory lock, which PgBouncer's transaction pooling cannot keep
on one server connection, so an instance behind PgBouncer must not migrate through it.
"""

from __future__ import annotations

import logging
import sys

from service.__main__ import check_before_serving, serve
from service.logs import configure_logging
from service.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"invalid setting: {error}", file=sys.stderr)
        return 2
    if settings.database_url is None:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if not check_before_serving(settings):  # durability (and role) as the instance sees them
        return 1
    logging.getLogger("deploy").info(
        "serving on http://%s:%s with %d workers", settings.host, settings.port, settings.workers
    )
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
