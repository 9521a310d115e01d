"""Object storage for the store: which providers are wired in, and the few operations the store
needs of each (``climate_ml.store`` is the only user).

A location is a URL ``<scheme>://<bucket>[/<prefix>]``:

- ``s3://bucket/prefix``: any S3-compatible store (AWS, MinIO, Ceph, ...), with the usual AWS
  variables: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``; none: AWS itself),
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``.
- ``az://container/prefix``: Azure Blob Storage (or Azurite), with
  ``AZURE_STORAGE_CONNECTION_STRING``, or ``AZURE_STORAGE_ACCOUNT_NAME`` with
  ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_SAS_TOKEN`` (and ``AZURE_STORAGE_ENDPOINT``
  for an endpoint other than ``https://<account>.blob.core.windows.net``).

Data sets and archives are Icechunk repositories there (``storage``); the leaderboard's records
and run reports are plain objects (``folders``, ``keys``, ``upload``, ``download``). Every
provider error becomes a one-line ``StoreError`` naming the URL and the endpoint.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
from dataclasses import dataclass

from climate_ml.errors import StoreError

# bucket / container names as the providers allow them; the prefix: letters, digits, '_', '.', '-', '/'
_URL = {
    "s3": re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/[A-Za-z0-9_.\-/]*)?"),
    "az": re.compile(r"az://((?!.*--)[a-z0-9][a-z0-9\-]{1,61}[a-z0-9])(/[A-Za-z0-9_.\-/]*)?"),
}
SCHEMES = tuple(_URL)
_SHAPES = "s3://bucket[/prefix] (S3-compatible) or az://container[/prefix] (Azure Blob Storage)"


def scheme_of(text: str) -> str | None:
    """The URL scheme of ``text`` (lower case), or None for a path."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", text)
    return m.group(1).lower() if m else None


def check_url(url: str, where: str) -> str:
    """``url`` without its trailing slash if it names a location in a wired-in object store, or a
    one-line StoreError naming where it came from (``where``: a variable, or "the store root")."""
    text = url.strip()
    pattern = _URL.get(scheme_of(text) or "")
    if pattern is None or not pattern.fullmatch(text) or ".." in text:
        raise StoreError(f"object-store URL {url!r} ({where}): give {_SHAPES}; a bucket or container "
                         "name as the provider allows it, then letters, digits, '_', '.', '-' or '/'")
    return text.rstrip("/")


def split(url: str) -> tuple[str, str]:
    """(bucket or container, key prefix) of a checked URL."""
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


def provider(url: str) -> Provider:
    """The provider of a checked URL (its client is made on first use); credentials that are
    missing or malformed are a one-line StoreError naming the URL."""
    try:
        return {"s3": S3, "az": Azure}[scheme_of(url)]()
    except StoreError as exc:
        raise StoreError(f"{url}: {exc}") from None


class Provider(abc.ABC):
    """What the store needs of one object store (each provider implements every abstract
    method; ``S3`` and ``Azure`` below). Keys are full keys within the bucket."""

    @abc.abstractmethod
    def where(self) -> str:
        """The endpoint, as messages name it."""

    @abc.abstractmethod
    def storage(self, url: str):
        """The Icechunk storage of the repository at ``url``."""

    @abc.abstractmethod
    def folders(self, bucket: str, prefix: str) -> list[str]:
        """The names of the "folders" directly under ``prefix``, sorted."""

    @abc.abstractmethod
    def keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix`` (full keys)."""

    @abc.abstractmethod
    def upload(self, file: str, bucket: str, key: str) -> None:
        """Put the local ``file`` at ``key``."""

    @abc.abstractmethod
    def download(self, bucket: str, key: str, file: str) -> None:
        """Write the object at ``key`` to the local ``file``."""

    @contextlib.contextmanager
    def errors(self, url: str):
        """The provider's errors (endpoint unreachable, credentials, no such bucket) as one-line
        StoreErrors naming ``url``."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - each SDK has its own error types
            if not self._is_provider_error(exc):
                raise
            raise StoreError(f"{url}: the object store at {self.where()} refused or cannot be reached "
                             f"({first_line(exc)})") from exc

    @abc.abstractmethod
    def _is_provider_error(self, exc: Exception) -> bool:
        """Is ``exc`` one of this provider's SDK errors (to become a one-line StoreError)?"""


def first_line(exc: BaseException) -> str:
    """The first meaningful line of an error (Icechunk prefixes its lines with '  x ')."""
    lines = [re.sub(r"^[\s|x×]+", "", line) for line in str(exc).strip().splitlines()]
    return next((line for line in lines if line), type(exc).__name__)[:200]


class S3(Provider):
    """An S3-compatible store through boto3 (path-style addressing for a custom endpoint, as
    for Icechunk; a few quick retries)."""

    def __init__(self):
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._client = None

    def where(self) -> str:
        return self.endpoint or "AWS S3"

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=self.region,
                config=Config(s3={"addressing_style": "path" if self.endpoint else "auto"}, connect_timeout=5,
                              read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}))
        return self._client

    def storage(self, url: str):
        import icechunk

        bucket, prefix = split(url)
        return icechunk.s3_storage(
            bucket=bucket, prefix=prefix, endpoint_url=self.endpoint, region=self.region,
            allow_http=bool(self.endpoint and self.endpoint.startswith("http://")),
            force_path_style=bool(self.endpoint),  # MinIO, Ceph and the like serve buckets as paths
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None)

    def folders(self, bucket: str, prefix: str) -> list[str]:
        names: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def upload(self, file: str, bucket: str, key: str) -> None:
        self.client.upload_file(file, bucket, key)

    def download(self, bucket: str, key: str, file: str) -> None:
        self.client.download_file(bucket, key, file)

    def _is_provider_error(self, exc: Exception) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        return isinstance(exc, BotoCoreError | ClientError)


@dataclass(frozen=True)
class AzureAccount:
    """The account, credential and blob endpoint the Azure variables name."""

    name: str
    endpoint: str
    key: str | None = None
    sas: str | None = None

    @classmethod
    def from_env(cls) -> AzureAccount:
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
        if conn:
            parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
            name = parts.get("AccountName", "")
            if not name:
                raise StoreError("AZURE_STORAGE_CONNECTION_STRING: no AccountName=... in it")
            protocol = parts.get("DefaultEndpointsProtocol", "https")
            suffix = parts.get("EndpointSuffix", "core.windows.net")
            endpoint = parts.get("BlobEndpoint") or f"{protocol}://{name}.blob.{suffix}"
            return cls(name, endpoint.rstrip("/"), parts.get("AccountKey") or None,
                       parts.get("SharedAccessSignature") or None)
        name = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "").strip()
        if not name:
            raise StoreError("an az:// store needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME "
                             "with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN")
        endpoint = os.environ.get("AZURE_STORAGE_ENDPOINT", "").strip() or f"https://{name}.blob.core.windows.net"
        return cls(name, endpoint.rstrip("/"), os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or None,
                   (os.environ.get("AZURE_STORAGE_SAS_TOKEN") or "").lstrip("?") or None)


class Azure(Provider):
    """Azure Blob Storage (or Azurite) through azure-storage-blob."""

    def __init__(self):
        self.account = AzureAccount.from_env()
        self._client = None

    def where(self) -> str:
        return self.account.endpoint

    @property
    def client(self):
        if self._client is None:
            from azure.storage.blob import BlobServiceClient, LinearRetry

            a = self.account
            credential = {"account_name": a.name, "account_key": a.key} if a.key else a.sas
            # two quick retries, as for S3, not the SDK's default back-off (15 s, then 45 s)
            self._client = BlobServiceClient(a.endpoint, credential=credential, connection_timeout=5, read_timeout=60,
                                             retry_policy=LinearRetry(backoff=1, random_jitter_range=1, retry_total=2))
        return self._client

    def storage(self, url: str):
        import icechunk

        container, prefix = split(url)
        a = self.account
        config = {"azure_storage_endpoint": a.endpoint}
        if a.endpoint.startswith("http://"):
            config["allow_http"] = "true"
        return icechunk.azure_storage(account=a.name, container=container, prefix=prefix, access_key=a.key,
                                      sas_token=None if a.key else a.sas, config=config)

    def _container(self, bucket: str):
        return self.client.get_container_client(bucket)

    def folders(self, bucket: str, prefix: str) -> list[str]:
        items = self._container(bucket).walk_blobs(name_starts_with=prefix, delimiter="/")
        return sorted(item.name[len(prefix):].rstrip("/") for item in items if item.name.endswith("/"))

    def keys(self, bucket: str, prefix: str) -> list[str]:
        return [blob.name for blob in self._container(bucket).list_blobs(name_starts_with=prefix)]

    def upload(self, file: str, bucket: str, key: str) -> None:
        with open(file, "rb") as f:
            self._container(bucket).upload_blob(key, f, overwrite=True)

    def download(self, bucket: str, key: str, file: str) -> None:
        with open(file, "wb") as f:
            self._container(bucket).download_blob(key).readinto(f)

    def _is_provider_error(self, exc: Exception) -> bool:
        from azure.core.exceptions import AzureError

        return isinstance(exc, AzureError | ValueError)
