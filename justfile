# Recipes for the investment service. Prerequisite on a fresh machine: `pip install rust-just`.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv + "/bin/python"

# List the recipes.
default:
    @just --list

# Create the virtualenv and install the project when missing or when pyproject.toml changed.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        [ -x "{{py}}" ] || python3 -m venv "{{venv}}"
        "{{py}}" -m pip install --quiet --upgrade pip
        "{{py}}" -m pip install --quiet -e ".[dev,bench]"
        rm -f {{venv}}/.installed-*
        touch "$stamp"
    fi

# Start the service (embedded PostgreSQL with demo data unless DATABASE_URL is set).
run: setup
    {{py}} -m service run

# Apply the migrations to DATABASE_URL.
migrate: setup
    {{py}} -m service migrate

# Check every ledger invariant on DATABASE_URL (default: `just run`'s embedded database, while it
# runs); prints each violation as JSON and exits 1 when there is any.
verify: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service verify

# Base backup (pg_basebackup, with the WAL it needs) of the owner's database into .data/backups/;
# WAL segments are archived continuously by the server (`just run`: .data/wal-archive/).
# Default: `just run`'s embedded database. Runbook: docs/operations.md.
[positional-arguments]
backup *args: setup
    MIGRATION_DATABASE_URL="${MIGRATION_DATABASE_URL:-${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}}" \
        {{py}} -m service backup "$@"

# Point-in-time restore into a fresh data directory, then the ledger verifier. Example:
#   just restore .data/backups/20261125T120000.000000Z --data-dir .data/restored --time "2026-11-25 21:30:00"
[positional-arguments]
restore *args: setup
    {{py}} -m service restore "$@"

# The whole test suite against a real PostgreSQL (TEST_DATABASE_URL, else an embedded one).
test *args: setup
    {{py}} -m pytest {{args}}

# Lint, format check and type check.
check: setup
    {{venv}}/bin/ruff check service tests bench deploy harness
    {{venv}}/bin/ruff format --check service tests bench deploy harness
    {{venv}}/bin/mypy service bench deploy harness

# Start haproxy on :8080 → 3 instances → PgBouncer → haproxy :5000 → the leader of 3 PostgreSQL 15
# members under Patroni (etcd on :2479, REST APIs :8008-8010, synchronous_mode). One server
# instead: CLUSTER_DATABASE=single (or DATABASE_URL). apt-get installs what is missing.
cluster: setup
    {{py}} -m deploy.cluster up

# Stop everything `just cluster` started.
cluster-down:
    {{py}} -m deploy.cluster down

# What `just cluster` started, whether it still runs, and Patroni's members (role, timeline, lag).
cluster-status:
    {{py}} -m deploy.cluster status

# Register a product (times in the display time zone); prints it as JSON. DATABASE_URL defaults to
# `just run`'s embedded database. Example:
#   just goods-add "개인신용 포트폴리오" 1000000 "2026-12-01 10:00:00" "2026-12-31 18:00:00"
[positional-arguments]
goods-add title total start finish: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service goods add --title "$1" --total "$2" --start "$3" --finish "$4"

# Close a product (status false): no more investments; prints it as JSON.
[positional-arguments]
goods-close goods_id: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service goods close "$1"

# Every product, one JSON object per line.
goods-list: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service goods list

# Database: a fresh `bench` on BENCH_DATABASE_URL's server (default 127.0.0.1:5432; embedded if none).
# The bench protocol of ../shared/BENCH.md (about 17 min on 2 cores); reports in bench/results/.
bench *args: setup
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ]; then
        # wrk (the server ceiling) is optional: the report says so when it is missing.
        apt-get install -y -qq wrk >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; } \
            || echo "wrk not installed: the server ceiling is skipped"
    fi
    {{py}} -m bench.run {{args}}

# Every bench scenario for a few seconds on a small dataset (under 2 min); reports in bench/.work/quick/.
bench-quick *args: setup
    {{py}} -m bench.run --quick {{args}}

# Writes profiles/*.svg, *.speedscope.json and profiles/HOTSPOTS.md; needs root or ptrace rights.
# py-spy over every service worker during scenario S: flame graphs and speedscope profiles.
profile *args: setup
    {{py}} -m bench.profile {{args}}
