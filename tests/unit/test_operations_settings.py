"""The operations settings: METRICS_ENABLED, ACCESS_LOG, ADMIN_TOKEN (no database)."""

from __future__ import annotations

import pytest

from service.settings import SettingsError, load_settings


def test_defaults_metrics_on_access_log_off_no_admin_api() -> None:
    settings = load_settings({})
    assert (settings.metrics_enabled, settings.access_log, settings.admin_token) == (
        True,
        False,
        None,
    )


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("1", True), ("ON", True), ("false", False), ("0", False), ("no", False)],
)
def test_flags(raw: str, value: bool) -> None:
    settings = load_settings({"METRICS_ENABLED": raw, "ACCESS_LOG": raw})
    assert settings.metrics_enabled is value and settings.access_log is value


def test_flags_survive_the_round_trip_to_the_workers() -> None:
    settings = load_settings(
        {"METRICS_ENABLED": "false", "ACCESS_LOG": "true", "ADMIN_TOKEN": "t" * 16}
    )
    assert load_settings(settings.as_env()) == settings


@pytest.mark.parametrize("raw", ["maybe", "2", ""])
def test_a_bad_flag_is_named(raw: str) -> None:
    with pytest.raises(SettingsError, match="ACCESS_LOG"):
        load_settings({"ACCESS_LOG": raw})


def test_an_empty_admin_token_disables_the_admin_api() -> None:
    assert load_settings({"ADMIN_TOKEN": "  "}).admin_token is None


@pytest.mark.parametrize(
    "raw", ["short", "has a space in the middle", "토큰" * 10, "tab\there-0123456789"]
)
def test_a_weak_or_malformed_admin_token_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="ADMIN_TOKEN"):
        load_settings({"ADMIN_TOKEN": raw})


def test_the_admin_token_is_not_in_the_settings_repr() -> None:
    assert "secret-token-0123456789" not in repr(
        load_settings({"ADMIN_TOKEN": "secret-token-0123456789"})
    )
