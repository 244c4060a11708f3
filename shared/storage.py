"""The lake: one storage interface, a local folder or S3; writes are atomic and idempotent on their keys."""

from __future__ import annotations

import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

from shared.errors import CstError, LakeKeyNotFound
from shared.logging import redact


def _check_key(key: str) -> str:
    # String tests, not a path object: every lake operation and every request's stamps pass here.
    if not key or key.startswith("/") or ".." in key.split("/") or "\\" in key or key.endswith("/"):
        raise CstError("lake_bad_key", f"lake keys are relative paths without '..': {key!r}")
    return key


class Stamp(NamedTuple):
    """What a key holds now, told without reading it: equal stamps, equal contents (see Lake.stamp)."""

    identity: tuple
    # False while a second write could still leave the same identity (the clock of the store has not moved on
    # since the last write): a reader may use it to notice a change, never to keep what it read.
    settled: bool


class Lake(ABC):
    """Key/value object store with the lake's guarantees."""

    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        """Write atomically. With if_absent, an existing key is kept and False is returned."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under prefix, sorted."""

    def folders(self, prefix: str) -> list[str]:
        """Names of the folders directly under `prefix` (which ends with '/'), sorted: a dataset's partition values
        without listing the keys inside them."""
        names = {k[len(prefix):].split("/", 1)[0] for k in self.list(prefix) if "/" in k[len(prefix):]}
        return sorted(names)

    def stamp(self, key: str) -> Stamp | None:
        """A stamp of what `key` holds now (a key, or a folder when it ends with '/'), changing with every write to
        the key or, for a folder, into the folder itself; None when the key is absent or the store cannot tell
        cheaply (then a reader reads again). Readers keep what they parsed only while a settled stamp holds."""
        return None

    def put_json(self, key: str, obj: Any, *, if_absent: bool = False) -> bool:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str)
        # The lake never stores a configured secret, whatever a caller hands it.
        return self.put(key, redact(text).encode(), if_absent=if_absent)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))


class LocalLake(Lake):
    # A file's or folder's modification time moves with the kernel's clock tick (a few ms; 2 s on FAT): two writes
    # within one tick leave the same time. A stamp is settled only once its time is this much in the past, so a
    # write can never hide behind an unchanged stamp (the "racy" rule of git's index).
    SETTLE_NS = 2_000_000_000

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        path = self._path(key)
        if if_absent and path.is_file():
            return False  # the common case (re-landing what is there) costs one stat, not a written copy
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if if_absent:
                # link() creates the name only if it does not exist: atomic create-if-absent.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                return True
            os.replace(tmp, path)
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise LakeKeyNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def folders(self, prefix: str) -> list[str]:
        try:
            with os.scandir(self.root / _check_key(prefix.rstrip("/")) if prefix else self.root) as entries:
                return sorted(e.name for e in entries if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def stamp(self, key: str) -> Stamp | None:
        # Every write through the lake creates its temporary file beside the key and renames it over the key, so
        # a folder's own time changes with every write into it, and a key's inode with every write to it.
        try:
            st = os.stat(os.path.join(self.uri, _check_key(key.rstrip("/"))))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Stamp((st.st_ino, st.st_mtime_ns, st.st_size), time.time_ns() - st.st_mtime_ns >= self.SETTLE_NS)

    def list(self, prefix: str = "") -> list[str]:
        # Walk only the folder the prefix names (its last part may be a partial name): the cost follows
        # what is asked for, not the size of the lake.
        folder, _, stem = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            rel = "" if rel == "." else rel + "/"
            if rel == (folder + "/" if folder else ""):
                dirnames[:] = [d for d in dirnames if d.startswith(stem)]
                filenames = [f for f in filenames if f.startswith(stem)]
            keys.extend(rel + f for f in filenames if not f.startswith(".tmp-"))
        return sorted(keys)


class S3Lake(Lake):
    def __init__(self, bucket: str, prefix: str = "", client: Any | None = None, region: str | None = None):
        if client is None:
            import boto3

            client = boto3.client("s3", region_name=region)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        from botocore.exceptions import ClientError

        # A single PUT is atomic in S3; If-None-Match makes create-if-absent atomic too.
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**kwargs)
        except ClientError as exc:
            if if_absent and exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise LakeKeyNotFound(key) from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        full = (f"{self.prefix}/" if self.prefix else "") + prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def folders(self, prefix: str) -> list[str]:
        full = (f"{self.prefix}/" if self.prefix else "") + prefix
        names: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full,
                                                                          Delimiter="/"):
            names.extend(p["Prefix"][len(full):].rstrip("/") for p in page.get("CommonPrefixes", []))
        return sorted(names)


def open_lake(uri: str, *, client: Any | None = None, region: str | None = None) -> Lake:
    """A local folder path or s3://bucket[/prefix]."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise CstError("lake_bad_uri", f"no bucket in lake URI {uri!r}")
        return S3Lake(bucket, prefix, client=client, region=region)
    scheme = uri.split(":", 1)[0].lower() if ":" in uri.split("/", 1)[0] else ""
    if scheme and len(scheme) > 1:  # "s3:/bucket", "s3:bucket", "http:...": a URI meant, not a folder (C: passes)
        raise CstError("lake_bad_uri", f"lake {uri!r} is neither a folder nor s3://bucket[/prefix] (two slashes); "
                                       "nothing was written")
    return LocalLake(uri)
