"""The lake contract, run against both implementations: a local folder and S3 (under moto)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from moto import mock_aws

from shared.errors import CstError, LakeKeyNotFound
from shared.storage import LocalLake, S3Lake, open_lake


def test_put_get_roundtrip_and_overwrite(lake):
    assert lake.put("raw/source=x/a.json", b"one")
    assert lake.get("raw/source=x/a.json") == b"one"
    assert lake.put("raw/source=x/a.json", b"two")
    assert lake.get("raw/source=x/a.json") == b"two"


def test_if_absent_keeps_the_first_write(lake):
    assert lake.put("models/horizon=24h/CURRENT", b"v1", if_absent=True) is True
    assert lake.put("models/horizon=24h/CURRENT", b"v2", if_absent=True) is False
    assert lake.get("models/horizon=24h/CURRENT") == b"v1"


def test_missing_key_is_a_typed_error(lake):
    with pytest.raises(LakeKeyNotFound) as info:
        lake.get("nope/missing.json")
    assert info.value.code == "lake_key_not_found"
    assert lake.exists("nope/missing.json") is False


def test_list_is_prefix_filtered_and_sorted(lake):
    for key in ("runs/run_id=2/summary.json", "runs/run_id=1/summary.json", "raw/x.json"):
        lake.put(key, b"{}")
    assert lake.list("runs/") == ["runs/run_id=1/summary.json", "runs/run_id=2/summary.json"]
    assert lake.list() == ["raw/x.json", "runs/run_id=1/summary.json", "runs/run_id=2/summary.json"]
    assert lake.exists("raw/x.json")


def test_json_helpers(lake):
    lake.put_json("quality/run_id=r/report.json", {"b": 1, "a": [1, 2]})
    assert lake.get_json("quality/run_id=r/report.json") == {"a": [1, 2], "b": 1}


@pytest.mark.parametrize("key", ["", "/abs/path", "a/../b", "dir/", "a\\b"])
def test_bad_keys_are_refused(lake, key):
    with pytest.raises(CstError) as info:
        lake.put(key, b"x")
    assert info.value.code == "lake_bad_key"


@hyp_settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_idempotent_if_absent_writes(payloads):
    """However often and with whatever bodies a key is written if-absent, the first body stays."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        lake = LocalLake(tmp)
        results = [lake.put("k/v.bin", p, if_absent=True) for p in payloads]
        assert results == [True] + [False] * (len(payloads) - 1)
        assert lake.get("k/v.bin") == payloads[0]
        assert lake.list() == ["k/v.bin"]


def test_local_concurrent_if_absent_has_one_winner(tmp_path):
    lake = LocalLake(tmp_path)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        wins.append(lake.put("race/key.json", str(i).encode(), if_absent=True))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert lake.get("race/key.json").decode() in {str(i) for i in range(8)}


def test_local_write_leaves_no_temporary_files(tmp_path):
    lake = LocalLake(tmp_path)
    lake.put("a/b.json", b"x")
    lake.put("a/b.json", b"y", if_absent=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]


def test_open_lake_picks_the_implementation(tmp_path, monkeypatch):
    assert isinstance(open_lake(str(tmp_path)), LocalLake)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        lake = open_lake("s3://bucket/some/prefix", region="us-east-1")
        assert isinstance(lake, S3Lake) and lake.bucket == "bucket" and lake.prefix == "some/prefix"
    with pytest.raises(CstError):
        open_lake("s3:///nobucket")


@pytest.mark.parametrize("uri", ["s3:/bucket", "s3:bucket/prefix", "S3:/bucket", "https://bucket"])
def test_a_mistyped_lake_uri_is_refused_before_anything_is_written(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CstError) as info:
        open_lake(uri)
    assert info.value.code == "lake_bad_uri" and "s3://bucket" in info.value.message
    assert not any(tmp_path.iterdir())  # no folder named "s3:" appeared


def test_a_folder_with_a_colon_later_in_its_path_is_still_a_folder(tmp_path):
    assert isinstance(open_lake(str(tmp_path / "lake:2024")), LocalLake)
    assert isinstance(open_lake("./lake"), LocalLake)
