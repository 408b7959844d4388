# Recipes for the investment service. Prerequisite on a fresh machine: `pip install rust-just`.
set shell := ["bash", "-euo", "pipefail", "-c"]

# VENV_DIR: another virtualenv than .venv (the setup test builds one in a temporary folder).
venv := env_var_or_default("VENV_DIR", ".venv")
py := venv + "/bin/python"
# uv, pinned, installed by pip into .tools/ on first use: the one tool a clean machine lacks.
uv_version := "0.13.8"
uv := ".tools/uv-" + uv_version + "/bin/uv"
extras := "--extra dev --extra bench"
# Integration tests that bound a latency: `just test` runs them with tests/system, alone.
serial_integration := "tests/integration/test_invest_many.py"

# List the recipes.
default:
    @just --list

# Install exactly uv.lock into the virtualenv (dev and bench extras) when the lock changed; a
# virtualenv left half-made (interrupted creation or install, or a python that no longer runs) is
# removed and built again.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="$(cat uv.lock pyproject.toml | sha256sum | cut -c1-16)"
    state="$(python3 harness/venv_state.py "{{venv}}" "$stamp")"
    case "$state" in
        ok) exit 0 ;;
        broken*) echo "{{venv}} is ${state#broken: }: rebuilding it" >&2; rm -rf "{{venv}}" ;;
    esac
    just --justfile "{{justfile()}}" uv-tool
    "{{uv}}" lock --check --quiet --python python3 \
        || { echo "uv.lock does not match pyproject.toml: run just lock" >&2; exit 1; }
    UV_PROJECT_ENVIRONMENT="{{venv}}" "{{uv}}" sync --frozen --quiet {{extras}} --python python3
    rm -f "{{venv}}"/.installed-*
    touch "{{venv}}/.installed-$stamp"

# Move every dependency in uv.lock to the newest release pyproject.toml allows (or pass uv's own
# options, e.g. `just lock --upgrade-package orjson`), then install it.
lock *args:
    just --justfile "{{justfile()}}" uv-tool
    "{{uv}}" lock --python python3 {{ if args == "" { "--upgrade" } else { args } }}
    just --justfile "{{justfile()}}" setup

# Install the pinned uv into .tools/ unless it is there and runs (an interrupted install is
# retried: the folder appears only once complete).
[private]
uv-tool:
    #!/usr/bin/env bash
    set -euo pipefail
    "{{uv}}" --version >/dev/null 2>&1 && exit 0
    target="$(dirname "$(dirname "{{uv}}")")"
    rm -rf "$target" "$target.part"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --target "$target.part" "uv=={{uv_version}}"
    mv "$target.part" "$target"

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

# The whole test suite against a real PostgreSQL (TEST_DATABASE_URL, else an embedded one per
# test process). With no arguments, in two parts: the tests that bound no latency (tests/unit and
# tests/integration but the held-row waits) in two processes (pytest-xdist), then the rest
# (tests/system: several real processes, faults, latency bounds; the held-row waits) one at a
# time, alone. With arguments: pytest with them, in one process.
[positional-arguments]
test *args: setup
    #!/usr/bin/env bash
    set -uo pipefail
    if [ "$#" -gt 0 ]; then exec "{{py}}" -m pytest "$@"; fi
    "{{py}}" -m pytest -n 2 --dist loadfile tests/unit tests/integration --ignore={{serial_integration}}
    parallel=$?
    "{{py}}" -m pytest tests/system {{serial_integration}}
    serial=$?
    [ "$parallel" = 0 ] && [ "$serial" = 0 ]

# Lint, format check and type check.
check: setup
    {{venv}}/bin/ruff check service tests bench deploy harness
    {{venv}}/bin/ruff format --check service tests bench deploy harness
    {{venv}}/bin/mypy service bench deploy harness tests/fakes.py

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

# Set a product's rules: --category general|real_estate, --min-amount N, --amount-unit N,
# --repaid true|false (at least one); prints it as JSON. Example:
#   just goods-rules 7 --category real_estate --min-amount 10000 --amount-unit 10000
[positional-arguments]
goods-rules goods_id *rules: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service goods rules "$@"

# Set a user's investor class (general, qualified, professional); prints the investor as JSON.
[positional-arguments]
investor-set user_id investor_class: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service investor set "$1" "$2"

# A user's class, live positions (total, real estate) and the caps of the class, as JSON.
[positional-arguments]
investor-show user_id: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service investor show "$1"

# Replace a class's caps in KRW (`none`: no cap). Example, the Act's caps for general individuals:
#   just limits-set general 5000000 30000000 10000000
[positional-arguments]
limits-set investor_class per_product total real_estate: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service limits set "$1" --per-product "$2" --total "$3" --real-estate "$4"

# Every class's caps, one JSON object per line.
limits-list: setup
    DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:${EMBEDDED_PG_PORT:-55432}/postgres}" \
        {{py}} -m service limits list

# Database: a fresh `bench` on BENCH_DATABASE_URL's server (default 127.0.0.1:5432; embedded if none).
# The bench protocol of bench/README.md (about 17 min on 2 cores); reports in bench/results/.
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

# Debian's JMeter 2.13 runs bench/jmx/seed.jmx, `threads` threads x `loops` requests of one API at
# a time, on the service (WORKERS=2, DB_POOL_SIZE=50, dataset D), then on the raw ASGI floor;
# apt-get installs jmeter, jmeter-http and a JDK when missing (as root). A smoke run:
# `just bench-jmeter 5 3 --quick`. Reports: bench/results/<stamp>-<sha>-jmeter.md.
# The seed's own load tool (scenario J) beside the seed's averages, 2-4 min on 2 cores.
[positional-arguments]
bench-jmeter threads="500" loops="60" *args: setup
    #!/usr/bin/env bash
    set -euo pipefail
    shift $(( $# < 2 ? $# : 2 ))  # threads and loops; the rest go to bench.run
    missing=()
    [ -f /usr/share/jmeter/bin/ApacheJMeter.jar ] || missing+=(jmeter)
    [ -f /usr/share/jmeter/lib/ext/ApacheJMeter_http.jar ] || missing+=(jmeter-http)
    command -v javac >/dev/null || missing+=(default-jdk-headless)
    # BENCH_JMETER_WIRE=1: the requests as the wire saw them too (bench/wire.py).
    if [ "${BENCH_JMETER_WIRE:-}" = 1 ]; then
        PATH="$PATH:/usr/sbin:/sbin" command -v tcpdump >/dev/null || missing+=(tcpdump)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        [ "$(id -u)" = 0 ] || { echo "scenario J needs ${missing[*]}: apt-get install them as root" >&2; exit 1; }
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    BENCH_JMETER_THREADS="{{threads}}" BENCH_JMETER_LOOPS="{{loops}}" \
        {{py}} -m bench.run --only jmeter --workers 2 --pool 50 "$@"

# Every bench scenario for a few seconds on a small dataset (under 2 min); reports in bench/.work/quick/.
bench-quick *args: setup
    {{py}} -m bench.run --quick {{args}}

# Writes profiles/*.svg, *.speedscope.json and profiles/HOTSPOTS.md; needs root or ptrace rights.
# py-spy over every service worker during scenario S: flame graphs and speedscope profiles.
profile *args: setup
    {{py}} -m bench.profile {{args}}
