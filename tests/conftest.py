"""Shared fixtures: the real recorded data beside the repository (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# The recorded twelve: the Yahoo files of twelve coins, Binance's spot BTCUSDT, Fear & Greed to 2024-06-30 and
# blockchain.com's BTC metrics. ../shared/data also holds the wide universe (binance-futures/, ~130 MB) and Fear &
# Greed after mid-2024, which tests read through `wide_data`, in small subsets.
TWELVE = ("README.md", "ohlcv", "binance", "sentiment/fear_greed.csv", "onchain")


def _real_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the repository, never in it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """The recorded twelve as a folder of their own (a copy: every run of a test reads the same files)."""
    import shutil

    real = _real_data()
    root = tmp_path_factory.mktemp("twelve")
    for rel in TWELVE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (real / rel).is_dir() else shutil.copyfile)(real / rel, root / rel)
    return root


@pytest.fixture(scope="session")
def wide_data() -> Path:
    """../shared/data as it is: every layout and venue it holds (read it in subsets; it is ~130 MB)."""
    return _real_data()


@pytest.fixture(autouse=True)
def _no_cst_env(monkeypatch):
    """Tests see default settings unless they set CST_* themselves."""
    import os

    for key in list(os.environ):
        if key.startswith("CST_"):
            monkeypatch.delenv(key, raising=False)


class FakeLambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    def __init__(self, function_name: str = "cst-test", request_id: str = "req-1"):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 1024
        self.invoked_function_arn = f"arn:aws:lambda:eu-west-1:123456789012:function:{function_name}"
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture(autouse=True)
def _powertools_offline(monkeypatch):
    """No X-Ray daemon here: traces are off; metrics still print their EMF documents to stdout."""
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "cst")


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory):
    """The CDK app synthesized once per session (the first synth in a process costs seconds, later ones a fraction):
    (stack, template). cdk-nag AwsSolutions is registered, so synth fails on any unacknowledged finding."""
    pytest.importorskip("aws_cdk")
    import os

    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from aws_cdk import App

    from infra.app import build, file_context

    context = file_context()
    # Container images are only staged at synth; nothing here needs Docker.
    app = App(outdir=str(tmp_path_factory.mktemp("cdk.out")), context={**context, "aws:cdk:bundling-stacks": []})
    stack = build(app)
    assembly = app.synth()
    return stack, assembly.get_stack_by_name(stack.stack_name).template


DAILY_COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")


def daily_source(shared_data: Path, dest: Path, coins: tuple[str, ...] = DAILY_COINS) -> Path:
    """A small source folder in the recorded layout: the daily files of `coins` and the sentiment history."""
    import shutil

    (dest / "ohlcv" / "1d").mkdir(parents=True)
    for coin in coins:
        shutil.copy(shared_data / "ohlcv" / "1d" / f"{coin}-USD.csv", dest / "ohlcv" / "1d")
    shutil.copytree(shared_data / "sentiment", dest / "sentiment")
    return dest


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path, monkeypatch):
    """The lake contract's two implementations: a local folder, and S3 under moto (a bucket with a key prefix)."""
    from shared.storage import LocalLake, S3Lake

    if request.param == "local":
        yield LocalLake(tmp_path / "lake")
        return
    import boto3
    from moto import mock_aws

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(var, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="cst-test-lake")
        yield S3Lake("cst-test-lake", "prefix/under", client=client)
