"""Where bytes land: local disk or S3-compatible object storage, written atomically.

URIs are either local paths or `s3://bucket/key`. S3 endpoints (MinIO, moto,
...) come from `StorageConfig.endpoint_url`, which defaults to the standard
`AWS_ENDPOINT_URL` variable; credentials come from the config or the standard
AWS chain. Nothing here knows about tenants or datasets (see `layout`).

Atomicity: local files are written under a temporary name and renamed into
place; an S3 object becomes visible only when its upload completes. Object names
are chosen by callers deterministically, so a retried write replaces.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys_ray.config import StorageConfig
from recsys_ray.io import formats

LOCAL_WRITE_BUFFER = 1 << 20
COPY_BLOCK = 8 << 20


@dataclass(frozen=True)
class StorageOptions:
    """The hashable subset of `StorageConfig` a filesystem is built from."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @classmethod
    def from_config(cls, cfg: StorageConfig | None) -> "StorageOptions":
        if cfg is None:
            return cls(endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))

        def secret(value):
            return value.get_secret_value() if value is not None else None

        return cls(
            endpoint_url=cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
            region=cfg.region,
            access_key_id=secret(cfg.access_key_id),
            secret_access_key=secret(cfg.secret_access_key),
            session_token=secret(cfg.session_token),
        )


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://") or uri.startswith("s3a://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with '/' separators."""
    base = uri.rstrip("/") if uri not in ("/",) else uri
    return posixpath.join(base, *[p.strip("/") for p in parts if p])


@lru_cache(maxsize=32)
def _s3_filesystem(options: StorageOptions) -> pafs.S3FileSystem:
    kwargs: dict = {}
    if options.endpoint_url:
        scheme, _, host = options.endpoint_url.partition("://")
        kwargs["endpoint_override"] = host or scheme
        kwargs["scheme"] = scheme if host else "https"
    if options.region:
        kwargs["region"] = options.region
    elif options.endpoint_url:
        kwargs["region"] = os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))
    if options.access_key_id:
        kwargs["access_key"] = options.access_key_id
        kwargs["secret_key"] = options.secret_access_key
        if options.session_token:
            kwargs["session_token"] = options.session_token
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, options: StorageOptions | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and filesystem path of `uri`."""
    options = options or StorageOptions.from_config(None)
    if is_s3(uri):
        return _s3_filesystem(options), uri.split("://", 1)[1]
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    """Inverse of `resolve`: the URI a user would write for `path` on `fs`."""
    return f"s3://{path}" if isinstance(fs, pafs.S3FileSystem) else path


@contextmanager
def atomic_output(uri: str, options: StorageOptions | None = None) -> Iterator[pa.NativeFile]:
    """A stream whose bytes appear at `uri` whole, or not at all, when the block ends.

    Local files are written under a hidden temporary name beside the target and
    renamed into place; a failure removes the temporary file and leaves an
    earlier file at `uri` as it was. On S3 the upload completes when the block
    ends; pyarrow cannot abort an upload, so when the block fails the object it
    completed is deleted (an upload that itself failed never replaced anything).
    """
    fs, path = resolve(uri, options)
    if isinstance(fs, pafs.LocalFileSystem):
        parent = posixpath.dirname(path)
        fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            with fs.open_output_stream(tmp, compression=None, buffer_size=LOCAL_WRITE_BUFFER) as stream:
                yield stream
            fs.move(tmp, path)
        finally:
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)
        return
    stream = fs.open_output_stream(path, compression=None)
    try:
        yield stream
    except BaseException:
        try:
            stream.close()  # completes what was written so far
        except Exception:
            pass  # the upload failed, so nothing replaced the object at `uri`
        else:
            fs.delete_file(path)
        raise
    stream.close()


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> int:
    """Write `data` to `uri` atomically; returns the number of bytes written."""
    with atomic_output(uri, options) as out:
        out.write(data)
    return len(data)


def write_table(uri: str, table: pa.Table, options: StorageOptions | None = None,
                compression: str = "zstd") -> int:
    """Write `table` as one Parquet object at `uri`, atomically; returns bytes written."""
    return write_tables(uri, [table], table.schema, options, compression)


def write_tables(uri: str, tables: Iterable[pa.Table], schema: pa.Schema, options: StorageOptions | None = None,
                 compression: str = "zstd", transient: bool = False) -> int:
    """Write consecutive `tables` as one Parquet object at `uri`, atomically; returns bytes written.

    Each table is encoded and sent as it arrives, so memory holds one table
    (and the stream's buffer), not the whole object. `transient`: see `formats.write_parquet`.
    """
    with atomic_output(uri, options) as out:
        formats.write_parquet(out, tables, schema, compression=compression, transient=transient)
        return out.tell()


def upload_file(local_path: str, uri: str, options: StorageOptions | None = None) -> int:
    """Copy the local file `local_path` to `uri` atomically, a block at a time; returns bytes written."""
    with open(local_path, "rb") as source, atomic_output(uri, options) as out:
        while block := source.read(COPY_BLOCK):
            out.write(block)
        return out.tell()


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = resolve(uri, options)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_table(uri: str, options: StorageOptions | None = None) -> pa.Table:
    fs, path = resolve(uri, options)
    return pq.read_table(path, filesystem=fs)


def read_row_groups(uri: str, row_groups: Iterable[int], options: StorageOptions | None = None) -> pa.Table:
    """Some row groups of one Parquet object: its footer and those groups' columns are read, nothing else."""
    fs, path = resolve(uri, options)
    with fs.open_input_file(path) as source:
        return pq.ParquetFile(source).read_row_groups(list(row_groups))


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = resolve(uri, options)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete(uri: str, options: StorageOptions | None = None) -> None:
    """Delete a file or a whole directory/prefix; missing targets are fine."""
    fs, path = resolve(uri, options)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif info.type == pafs.FileType.Directory:
        fs.delete_dir(path)


@dataclass(frozen=True)
class FileEntry:
    uri: str
    size: int


def list_files(uri: str, options: StorageOptions | None = None, *,
               suffixes: tuple[str, ...] | None = None) -> list[FileEntry]:
    """Files named by `uri`: one file, every file under a directory, or a glob.

    Hidden and temporary names (starting with '.' or '_') are skipped, as Spark
    and Ray do. The result is sorted by URI so plans are deterministic.
    """
    fs, path = resolve(uri, options)
    pattern = None
    if any(ch in path for ch in "*?["):
        pattern = path
        path = _glob_base(path)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File and pattern is None:
        entries = [info]
    elif info.type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    else:
        entries = []
    out = []
    for entry in entries:
        if entry.type != pafs.FileType.File:
            continue
        relative = entry.path[len(path):].lstrip("/") if entry.path != path else entry.base_name
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        if pattern is not None and not fnmatch.fnmatch(entry.path, pattern):
            continue
        if suffixes and not entry.path.lower().endswith(suffixes):
            continue
        out.append(FileEntry(to_uri(fs, entry.path), entry.size))
    return sorted(out, key=lambda e: e.uri)


def _glob_base(path: str) -> str:
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return "/".join(parts[:i]) or "/"
    return path
