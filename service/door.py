"""How many connections granian holds open per worker (its backpressure): what the settings ask,
within what the open-files limit lets a worker hold."""

from __future__ import annotations

import logging
import resource
import sys

from service.settings import Settings

log = logging.getLogger("service")

# Files a worker holds besides its clients' connections and its pool: the readiness probe's
# connections, the metrics files, the interpreter's and the runtimes' own descriptors.
OTHER_FILES = 256


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (never above the hard limit;
    granian's workers inherit it); the files it may open now (sys.maxsize: no limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def backpressure(settings: Settings) -> int:
    """Settings.connections_per_worker(), the open-files limit raised to hold it. When even the
    hard limit is too low, the connections it allows: past the limit granian's accept() fails
    with EMFILE, again and again, while the connection waits unanswered in the kernel."""
    wanted = settings.connections_per_worker()
    besides = settings.pool_share() + OTHER_FILES
    limit = raise_open_files_limit(wanted + besides)
    if wanted + besides <= limit:
        return wanted
    allowed = max(1, limit - besides)
    # A warning when even the invest queue could no longer fill before the door closes.
    invests = (
        settings.invest_queue_max + settings.invest_calls_in_flight * settings.invest_batch_max
    )
    log.log(
        logging.WARNING if allowed < invests else logging.INFO,
        "the open-files limit (%d) lets each worker hold %d connections, not the %d that"
        " SERVER_BACKPRESSURE or the queues ask for: raise it (ulimit -n, LimitNOFILE=)",
        limit,
        allowed,
        wanted,
    )
    return allowed
