"""Settings tree: environment nesting, SecretStr, and Secrets Manager resolution (under moto)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from shared.errors import CstError
from shared.settings import HorizonSpec, Settings, resolve_secrets, timeframe_ms


def test_defaults_cover_every_knob_family():
    s = Settings(_env_file=None)
    assert s.lake.uri == "./lake"
    assert s.exchange.id == "kraken"
    assert s.horizons == ["1h", "24h", "7d", "30d"]
    assert s.confidence_threshold == 0.80
    assert s.http.concurrency > 1
    assert "stale" in s.quality.rules


def test_environment_overrides_nested_fields(monkeypatch):
    monkeypatch.setenv("CST_EXCHANGE__ID", "binance")
    monkeypatch.setenv("CST_HTTP__CONCURRENCY", "3")
    monkeypatch.setenv("CST_UNIVERSE", '["BTC","ETH"]')
    monkeypatch.setenv("CST_EXCHANGE__API_KEY", "k-123")
    s = Settings(_env_file=None)
    assert (s.exchange.id, s.http.concurrency, s.universe.coins) == ("binance", 3, ["BTC", "ETH"])
    # SecretStr: the value is reachable on purpose only, never through repr or a dump.
    assert "k-123" not in repr(s) and "k-123" not in s.model_dump_json()
    assert s.secret_values() == ["k-123"]


def test_dotenv_file_is_read(tmp_path):
    env = tmp_path / ".env"
    env.write_text("CST_EXCHANGE__QUOTE=EUR\nCST_SOURCES__COINMETRICS_API_KEY=cm-secret\n")
    s = Settings(_env_file=env)
    assert s.exchange.quote == "EUR"
    assert s.sources.coinmetrics_api_key.get_secret_value() == "cm-secret"


def test_unknown_timeframe_is_refused():
    with pytest.raises(Exception, match="bad_timeframe"):
        Settings(_env_file=None, timeframes=["1h", "7x"])
    assert timeframe_ms("4h") == 4 * 3_600_000


@pytest.fixture
def aws(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


def test_secrets_manager_fills_secret_fields(aws):
    aws.create_secret(Name="cst/prod", SecretString=json.dumps(
        {"exchange_api_key": "sm-key", "exchange_api_secret": "sm-secret", "unrelated": "ignored"}))
    s = resolve_secrets(Settings(_env_file=None, secrets_manager_id="cst/prod"), client=aws)
    assert s.exchange.api_key.get_secret_value() == "sm-key"
    assert s.exchange.api_secret.get_secret_value() == "sm-secret"
    assert s.sources.coinmetrics_api_key is None
    assert sorted(s.secret_values()) == ["sm-key", "sm-secret"]


def test_without_secret_id_the_environment_is_used(monkeypatch, aws):
    monkeypatch.setenv("CST_EXCHANGE__API_KEY", "env-key")
    s = resolve_secrets(Settings(_env_file=None), client=aws)
    assert s.exchange.api_key.get_secret_value() == "env-key"


def test_missing_secret_is_a_clear_error(aws):
    with pytest.raises(CstError) as info:
        resolve_secrets(Settings(_env_file=None, secrets_manager_id="cst/absent"), client=aws)
    assert info.value.code == "secret_unavailable" and "cst/absent" in info.value.message


def test_non_object_secret_is_refused(aws):
    aws.create_secret(Name="cst/list", SecretString="[1, 2]")
    with pytest.raises(CstError) as info:
        resolve_secrets(Settings(_env_file=None, secrets_manager_id="cst/list"), client=aws)
    assert info.value.code == "secret_malformed"


def test_a_horizon_is_as_long_as_its_bars_of_its_timeframe():
    horizons = Settings(_env_file=None).training.horizons
    assert horizons["1h"].length_ms == 3_600_000
    assert horizons["7d"].length_ms == 7 * 86_400_000
    # Any ccxt timeframe, not only 1h and 1d: 6 four-hour bars are a day.
    assert HorizonSpec(timeframe="4h", bars=6, sequence_length=16).length_ms == 86_400_000
