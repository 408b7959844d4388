"""Settings: defaults, parsing, and invalid values failing with a message naming the setting."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError, child_environment, load_settings, redact


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.port == 8000
    assert settings.db_pool_size == 50
    assert settings.timezone == "Asia/Seoul"
    assert settings.list_cache_seconds == 1.0
    assert settings.max_body_bytes == 16 * 1024
    assert settings.workers >= 1
    assert (settings.read_call_spacing_seconds, settings.read_call_spacing_full) == (0.004, 32)
    assert (
        settings.invest_call_spacing_seconds,
        settings.invest_call_spacing_full,
        settings.invest_call_spacing_arrivals,
    ) == (0.010, 16, 4)


def test_values_from_the_environment() -> None:
    settings = load_settings(
        {"DATABASE_URL": "postgresql://u@h:5/db", "PORT": "9000", "WORKERS": "4",
         "DB_POOL_SIZE": "50", "TIMEZONE": "UTC", "LIST_CACHE_SECONDS": "0",
         "DB_ACQUIRE_TIMEOUT": "0.5", "MAX_BODY_BYTES": "1024"}
    )  # fmt: skip
    assert settings.port == 9000
    assert settings.pool_share() == 12  # 50 // 4: the total never exceeds DB_POOL_SIZE
    assert settings.timezone == "UTC"
    assert settings.list_cache_seconds == 0
    assert settings.db_acquire_timeout == 0.5


def test_pool_share_never_exceeds_the_total() -> None:
    for workers in range(1, 9):
        settings = load_settings({"WORKERS": str(workers), "DB_POOL_SIZE": "50"})
        assert settings.pool_share() * workers <= 50


def test_settings_round_trip_through_the_environment() -> None:
    settings = load_settings({"PORT": "8123", "TIMEZONE": "UTC", "DATABASE_URL": "postgres://x/y"})
    assert load_settings(settings.as_env()) == settings


@pytest.mark.parametrize(
    "name, value",
    [("PORT", "eighty"), ("PORT", "70000"), ("WORKERS", "0"), ("DB_POOL_SIZE", "-1"),
     ("TIMEZONE", "Mars/Olympus"), ("LIST_CACHE_SECONDS", "soon"), ("LIST_CACHE_SECONDS", "-1"),
     ("DB_ACQUIRE_TIMEOUT", "0"), ("MAX_BODY_BYTES", "1"), ("DATABASE_URL", "mysql://x"),
     ("LOG_LEVEL", "LOUD"), ("HOST", " "), ("LIST_CACHE_SECONDS", "nan"),
     ("MIGRATION_DATABASE_URL", "mysql://x"), ("ALLOW_UNSAFE_DURABILITY", "maybe"),
     ("READ_CALL_SPACING_SECONDS", "0.5"), ("READ_CALL_SPACING_SECONDS", "-0.001"),
     ("READ_CALL_SPACING_FULL", "0"), ("INVEST_CALL_SPACING_SECONDS", "0.5"),
     ("INVEST_CALL_SPACING_SECONDS", "soon"), ("INVEST_CALL_SPACING_FULL", "0"),
     ("INVEST_CALL_SPACING_ARRIVALS", "0"), ("INVEST_CALL_SPACING_ARRIVALS", "2.5")],
)  # fmt: skip
def test_invalid_setting_names_itself(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize("name", ["READ_CALL_SPACING_SECONDS", "INVEST_CALL_SPACING_SECONDS"])
def test_a_call_spacing_as_long_as_the_acquire_timeout_is_refused(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: "0.05", "DB_ACQUIRE_TIMEOUT": "0.05"})
    assert load_settings({name: "0.05", "DB_ACQUIRE_TIMEOUT": "0.06"})


@pytest.mark.parametrize("workers, pool", [("8", "4"), ("4", "7"), ("1", "1")])
def test_fewer_than_two_connections_per_worker_is_refused(workers: str, pool: str) -> None:
    with pytest.raises(SettingsError, match="DB_POOL_SIZE"):
        load_settings({"WORKERS": workers, "DB_POOL_SIZE": pool})


def test_two_connections_per_worker_is_enough() -> None:
    assert load_settings({"WORKERS": "4", "DB_POOL_SIZE": "8"}).pool_share() == 2


def test_migrations_run_as_the_owner_when_given_else_as_database_url() -> None:
    service = "postgresql://investment_app@h/db"
    assert load_settings({"DATABASE_URL": service}).owner_url == service
    owner = "postgresql://owner:secret@h/db"
    settings = load_settings({"DATABASE_URL": service, "MIGRATION_DATABASE_URL": owner})
    assert settings.owner_url == owner and settings.database_url == service
    assert "secret" not in repr(settings)


def test_unsafe_durability_is_refused_by_default() -> None:
    assert load_settings({}).allow_unsafe_durability is False
    assert load_settings({"ALLOW_UNSAFE_DURABILITY": "true"}).allow_unsafe_durability is True


def test_edge_settings_defaults() -> None:
    settings = load_settings({})
    assert settings.list_cache_max_bytes == 32 * 1024 * 1024
    assert settings.http_idle_timeout == 75.0
    assert settings.metrics_token is None


def test_edge_settings_from_the_environment() -> None:
    settings = load_settings(
        {"LIST_CACHE_MAX_BYTES": "1048576", "HTTP_IDLE_TIMEOUT": "2.5",
         "METRICS_TOKEN": "scrape-token-0123456789"}
    )  # fmt: skip
    assert settings.list_cache_max_bytes == 1024 * 1024
    assert settings.http_idle_timeout == 2.5
    assert settings.metrics_token == "scrape-token-0123456789"
    assert "scrape-token" not in repr(settings)
    assert load_settings(settings.as_env()) == settings
    assert load_settings({"METRICS_TOKEN": " "}).metrics_token is None  # empty: /metrics open


@pytest.mark.parametrize(
    "name, value",
    [("LIST_CACHE_MAX_BYTES", "1000"), ("LIST_CACHE_MAX_BYTES", "lots"),
     ("LIST_CACHE_MAX_BYTES", str(8 * 1024**3)), ("HTTP_IDLE_TIMEOUT", "0"),
     ("HTTP_IDLE_TIMEOUT", "7200"), ("HTTP_IDLE_TIMEOUT", "nan"), ("HTTP_HEADER_TIMEOUT", "5"),
     ("METRICS_TOKEN", "short"), ("METRICS_TOKEN", "has a space in it, 0123456789")],
)  # fmt: skip
def test_invalid_edge_setting_names_itself(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_embedded_database_and_metrics_directory_come_from_the_environment() -> None:
    settings = load_settings(
        {"EMBEDDED_PG_PORT": "55999", "EMBEDDED_PG_DATA": "/tmp/pg", "EMBEDDED_PG_ARCHIVE": " ",
         "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics"}
    )  # fmt: skip
    assert settings.embedded_pg_port == 55999
    assert settings.embedded_pg_data == "/tmp/pg"
    assert settings.embedded_pg_archive is None  # blank: the checkout's .data/wal-archive
    assert settings.prometheus_multiproc_dir == "/tmp/metrics"
    assert load_settings(settings.as_env()) == settings
    with pytest.raises(SettingsError, match="EMBEDDED_PG_PORT"):
        load_settings({"EMBEDDED_PG_PORT": "70000"})


def test_the_cluster_reads_the_shared_settings_with_the_services_parsers() -> None:
    from deploy.config import ClusterConfig, ClusterError

    config = ClusterConfig.from_env({"TIMEZONE": "UTC", "DB_STATEMENT_TIMEOUT": "2.5"})
    assert (config.timezone, config.statement_timeout) == ("UTC", 2.5)
    assert ClusterConfig.from_env({}).timezone == Settings().timezone
    with pytest.raises(ClusterError, match="DB_STATEMENT_TIMEOUT"):
        ClusterConfig.from_env({"DB_STATEMENT_TIMEOUT": "soon"})


def test_no_password_in_the_repr() -> None:
    settings = load_settings(
        {"DATABASE_URL": "postgresql://app:app-secret@db:5432/investment",
         "MIGRATION_DATABASE_URL": "postgresql://owner:owner-secret@db:5432/investment"}
    )  # fmt: skip
    shown = repr(settings)
    assert "app-secret" not in shown and "owner-secret" not in shown
    assert "postgresql://app:***@db:5432/investment" in shown  # which database, still said
    assert "postgresql://owner:***@db:5432/investment" in shown


def test_an_invalid_url_is_named_without_its_password() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL") as refused:
        load_settings({"DATABASE_URL": "mysql://app:app-secret@db/investment"})
    assert "app-secret" not in str(refused.value)


@pytest.mark.parametrize(
    "text, shown",
    [("postgresql://app:pw@db:5432/x", "postgresql://app:***@db:5432/x"),
     ("at postgres://app:p%40ss@db/x now", "at postgres://app:***@db/x now"),
     ("postgresql://app:p@ss/w0rd@db/x", "postgresql://app:***@db/x"),  # unencoded @ and /
     ("'postgresql://app:pw@db/x'", "'postgresql://app:***@db/x'"),
     ("host=db password=pw user=app", "host=db password=*** user=app"),
     ("password = 'p w' dbname=x", "password = *** dbname=x"),
     ("postgresql://app@db/x", "postgresql://app@db/x"),  # no password: unchanged
     ("postgresql://db:5432/x", "postgresql://db:5432/x"),
     ("http://127.0.0.1:8000/readyz", "http://127.0.0.1:8000/readyz")],
)  # fmt: skip
def test_redact_hides_every_password(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_the_owner_url_is_only_for_a_child_that_migrates(monkeypatch: pytest.MonkeyPatch) -> None:
    owner = "postgresql://owner:owner-secret@db/investment"
    monkeypatch.setenv("MIGRATION_DATABASE_URL", owner)  # as `just run` itself was started
    settings = load_settings({"DATABASE_URL": "postgresql://app@db/investment",
                              "MIGRATION_DATABASE_URL": owner})  # fmt: skip
    assert "MIGRATION_DATABASE_URL" not in settings.as_env()
    assert settings.as_env(owner=True)["MIGRATION_DATABASE_URL"] == owner
    serving = child_environment(settings)
    assert "MIGRATION_DATABASE_URL" not in serving
    assert serving["DATABASE_URL"] == "postgresql://app@db/investment"
    assert child_environment(settings, owner=True)["MIGRATION_DATABASE_URL"] == owner


def test_privileged_service_settings() -> None:
    settings = load_settings({})
    assert settings.allow_privileged_service is False and settings.db_session_role is None
    settings = load_settings(
        {"ALLOW_PRIVILEGED_SERVICE": "true", "DB_SESSION_ROLE": "investment_service"}
    )
    assert settings.allow_privileged_service is True
    assert settings.db_session_role == "investment_service"
    assert load_settings(settings.as_env()) == settings
    for name, value in [("ALLOW_PRIVILEGED_SERVICE", "perhaps"),
                        ("DB_SESSION_ROLE", "x -c statement_timeout=0"),
                        ("DB_SESSION_ROLE", "Investment")]:  # fmt: skip
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value})


def test_events_settings() -> None:
    settings = load_settings(
        {"NATS_URL": " nats://a:4222, nats://b:4222 ,", "DATABASE_URL": "postgresql://x@h/db"}
    )
    assert settings.nats_url == "nats://a:4222,nats://b:4222"
    assert settings.relay_url == "postgresql://x@h/db"  # RELAY_DATABASE_URL unset
    direct = load_settings(
        {
            "DATABASE_URL": "postgresql://x@pgbouncer/db",
            "RELAY_DATABASE_URL": "postgresql://x@pg/db",
        }
    )
    assert direct.relay_url == "postgresql://x@pg/db"
    assert load_settings({"NATS_URL": ""}).nats_url is None  # events off


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NATS_URL": "http://a:4222"}, "NATS_URL"),
        ({"NATS_URL": "nats://user:secret@a:4222,localhost:4222"}, "NATS_URL"),
        ({"RELAY_BATCH": "0"}, "RELAY_BATCH"),
        ({"NATS_STREAM_REPLICAS": "6"}, "NATS_STREAM_REPLICAS"),
        (
            {"NATS_DUPLICATE_WINDOW_SECONDS": "5", "NATS_PUBLISH_TIMEOUT": "5"},
            "NATS_DUPLICATE_WINDOW_SECONDS",
        ),
    ],
)
def test_invalid_events_settings_name_themselves(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as refused:
        load_settings(env)
    assert "secret" not in str(refused.value)
