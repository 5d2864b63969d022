"""Object storage for inputs and outputs: ``s3://``, ``gs://``, ``az://`` (any fsspec
protocol) beside plain paths.

* :class:`ObjectPath` is an object URL with the part of ``pathlib.Path``'s interface
  that invgray's naming rules use (``name``, ``stem``, ``suffix``, ``parent``, ``/``,
  ``with_name``) and the questions a batch asks (``exists``, ``is_file``, ``is_dir``,
  ``read_bytes``), so the same code names the outputs of a local file and of an object.
  ``file://`` URLs become plain :class:`~pathlib.Path` objects (:func:`location`).
* :func:`walk_files` lists a folder or prefix as a stream, in lexicographic key order:
  S3 a page of keys at a time, other stores a folder at a time; nothing holds the whole
  listing, so a bucket of a million photos never sits in memory.
* :func:`write_set` writes the outputs of one input as a set: each under a temporary
  key beside its target, then moved to its final key, then the temporary removed.

fsspec and the protocol's package (s3fs, gcsfs, adlfs) are imported only when a URL is
used: plain-path runs never import them. The filesystem's own configuration applies
(credentials, ``AWS_ENDPOINT_URL`` for S3-compatible servers, ``FSSPEC_S3_*``).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
             "abfss": "adlfs"}
EXTRA_HINT = "pip install 'invgray[cluster]'"  # the cluster extra carries fsspec and s3fs
PART_SUFFIX = ".invgray.part"  # temporary keys: hidden (leading dot) and never a photo or a gray
LIST_PAGE = 1000  # keys per S3 listing request (S3's own maximum)


class StorageError(Exception):
    """A URL that cannot be used here (unknown protocol, package missing); one line."""


def is_url(name: object) -> bool:
    """Whether a command-line name is a URL (``scheme://...``) rather than a plain path."""
    return isinstance(name, str) and _URL.match(name) is not None


def one_line(text: object) -> str:
    """Storage libraries put newlines and XML in their messages; a report line has none."""
    return " ".join(str(text).split())


@dataclass(frozen=True, order=True)
class ObjectPath:
    """An object (or prefix) URL, normalised: no trailing slash. Picklable: a worker
    process opens its own filesystem from the URL."""

    url: str

    def __post_init__(self) -> None:
        match = _URL.match(self.url)
        if match is None:
            raise ValueError(f"not a URL: {self.url}")
        rest = match.group(2).rstrip("/")
        object.__setattr__(self, "url", f"{match.group(1).lower()}://{rest}")

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def key(self) -> str:
        """Everything after ``scheme://``: bucket (or container) and key."""
        return self.url.split("://", 1)[1]

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix if self.name else ""

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem if self.name else ""

    @property
    def parent(self) -> ObjectPath:
        head = posixpath.dirname(self.key)
        return ObjectPath(f"{self.protocol}://{head}") if head else self

    def __truediv__(self, part: str | Path) -> ObjectPath:
        part = str(part).strip("/")
        if part in ("", "."):
            return self
        return ObjectPath(f"{self.url}/{part}")

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def relative_to(self, other: ObjectPath) -> str:
        """The key below ``other`` ('' for ``other`` itself); ValueError when not below it."""
        if self.url == other.url:
            return ""
        if not self.url.startswith(other.url + "/"):
            raise ValueError(f"{self} is not below {other}")
        return self.url[len(other.url) + 1:]

    def __str__(self) -> str:
        return self.url

    def resolve(self) -> ObjectPath:
        """Keys have no links or '..' to resolve (Path interface, for same-file checks)."""
        return self

    # The questions a batch asks, as pathlib asks them of a local file.
    def exists(self) -> bool:
        fs, path = filesystem(self)
        return bool(fs.exists(path))

    def is_file(self) -> bool:
        fs, path = filesystem(self)
        return bool(fs.isfile(path))

    def is_dir(self) -> bool:
        fs, path = filesystem(self)
        if _is_s3(fs):
            # s3fs's isdir lists the whole prefix (and caches it): one key is enough to know
            bucket, _, key = path.partition("/")
            if not key:
                return bool(fs.exists(bucket))  # a bucket is a folder, even when empty
            page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
            return bool(page.get("KeyCount") or page.get("Contents"))
        return bool(fs.isdir(path))

    def read_bytes(self) -> bytes:
        fs, path = filesystem(self)
        return fs.cat_file(path)


def location(name: str | Path) -> Path | ObjectPath:
    """A command-line name as a path: a URL as an :class:`ObjectPath`, ``file://`` and
    everything else as a local :class:`~pathlib.Path`."""
    if isinstance(name, Path) or not is_url(name):
        return Path(name)
    if name.lower().startswith("file://"):
        return Path(name[len("file://"):] or "/")
    return ObjectPath(name)


def filesystem(target: ObjectPath) -> tuple[Any, str]:  # noqa: ANN401 - an fsspec filesystem
    """The fsspec filesystem of a URL (fsspec caches instances) and the path it uses."""
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"{target.protocol}:// paths need fsspec: {EXTRA_HINT}") from None
    try:
        fs = fsspec.filesystem(target.protocol)
    except ImportError:
        package = _PACKAGES.get(target.protocol)
        hint = f"pip install {package}" if package not in (None, "s3fs") else EXTRA_HINT
        raise StorageError(f"{target.protocol}:// paths need {package or 'its fsspec package'}: {hint}") from None
    except ValueError as exc:
        raise StorageError(f"{target}: {one_line(exc)}") from None
    return fs, fs._strip_protocol(target.url)  # noqa: SLF001 - fsspec's own URL-to-path rule


def check_usable(target: ObjectPath) -> None:
    """Raise StorageError now (at argument parsing) if the URL's filesystem cannot load."""
    filesystem(target)


def read(target: ObjectPath) -> bytes:
    """An object's bytes; OSError with a one-line reason ('no such file', 'is a directory')."""
    fs, path = filesystem(target)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        try:
            folder = fs.isdir(path)
        except Exception:  # noqa: BLE001 - the question was only to word the message
            folder = False
        raise OSError("is a directory" if folder else "no such file") from None
    except IsADirectoryError:
        raise OSError("is a directory") from None
    except PermissionError as exc:
        raise OSError(f"cannot read (access denied: {one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - botocore and friends raise their own types
        raise OSError(f"cannot read ({one_line(exc)})") from None


def head(target: ObjectPath, size: int) -> bytes:
    """The first ``size`` bytes ('' when unreadable): enough to tell a residual or an image."""
    fs, path = filesystem(target)
    try:
        return fs.cat_file(path, start=0, end=size)
    except Exception:  # noqa: BLE001 - a name that cannot be read is simply not that kind of file
        return b""


def walk_files(root: Path | ObjectPath, recursive: bool) -> Iterator[Path | ObjectPath]:
    """Files below ``root`` (subfolders with ``recursive``), in lexicographic order of
    the full name, as a stream. Names starting with a dot are left out, as in local
    folder runs. Lexicographic order puts every file of one folder and stem next to each
    other, which is what lets a batch find name clashes without remembering every name."""
    if isinstance(root, ObjectPath):
        fs, path = filesystem(root)
        if _is_s3(fs):
            yield from _walk_s3(fs, root, path, recursive)
        else:
            yield from _walk_fsspec(fs, root, path, recursive)
        return
    yield from _walk_local(root, recursive)


def _walk_local(folder: Path, recursive: bool) -> Iterator[Path]:
    """One folder's entries at a time; folders sort as 'name/' so that the order is that
    of the full paths (an object store's order). Links to folders are not followed, as
    ``Path.rglob`` does not follow them."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name + ("/" if e.is_dir(follow_symlinks=False) else ""))
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                yield from _walk_local(Path(entry.path), recursive)
        elif entry.is_file() and not entry.name.startswith("."):
            yield Path(entry.path)


def _walk_s3(fs: Any, root: ObjectPath, path: str, recursive: bool) -> Iterator[ObjectPath]:  # noqa: ANN401
    """ListObjectsV2 a page at a time: S3 returns keys in lexicographic (UTF-8) order."""
    bucket, _, key = path.partition("/")
    prefix = f"{key.strip('/')}/" if key.strip("/") else ""
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE}
    if not recursive:
        request["Delimiter"] = "/"
    while True:
        page = fs.call_s3("list_objects_v2", **request)
        for item in page.get("Contents", []):
            name = item["Key"]
            if name.endswith("/") or posixpath.basename(name).startswith("."):
                continue  # folder markers, hidden objects and invgray's temporary keys
            yield ObjectPath(f"{root.protocol}://{bucket}/{name}")
        if not page.get("IsTruncated"):
            return
        request["ContinuationToken"] = page["NextContinuationToken"]


def _walk_fsspec(fs: Any, root: ObjectPath, path: str, recursive: bool) -> Iterator[ObjectPath]:  # noqa: ANN401
    """Any other fsspec store: one folder's listing at a time."""
    entries = sorted(fs.ls(path, detail=True),
                     key=lambda e: posixpath.basename(e["name"].rstrip("/")) + ("/" if e["type"] == "directory" else ""))
    for entry in entries:
        name = posixpath.basename(entry["name"].rstrip("/"))
        child = root / name
        if entry["type"] == "directory":
            if recursive:
                yield from _walk_fsspec(fs, child, fs._strip_protocol(child.url), recursive)  # noqa: SLF001
        elif not name.startswith("."):
            yield child


def _is_s3(fs: Any) -> bool:  # noqa: ANN401
    return type(fs).__name__ == "S3FileSystem"


def temporary_of(target: ObjectPath) -> ObjectPath:
    """The temporary key of a target: fixed, so that a retried file (a lost worker's)
    overwrites its own earlier attempt instead of leaving another one behind."""
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def write_set(files: list[tuple[ObjectPath, bytes]], overwrite: bool = False) -> None:
    """Write the outputs of one input as a set: every file under its temporary key first,
    then each moved to its final key, the first file of the list last (the gray image
    that a decode lists appears only once its residual is there), then the temporary keys
    removed. A failure removes the temporary keys and the final ones this call created.

    Without ``overwrite`` an existing target is refused (FileExistsError), unless it
    already holds exactly these bytes: that is an earlier attempt of this same file (a
    retried task whose first attempt got that far), and the set is completed around it.
    Other failures raise OSError with a one-line message."""
    staged: list[tuple[ObjectPath, ObjectPath, bytes]] = []
    committed: list[ObjectPath] = []
    try:
        for target, data in files:
            fs, _ = filesystem(target)
            temporary = temporary_of(target)
            _call(f"cannot write {temporary}", fs.pipe_file, filesystem(temporary)[1], data)
            staged.append((temporary, target, data))
        for temporary, target, data in reversed(staged):
            fs, final = filesystem(target)
            _, temp_path = filesystem(temporary)
            if not overwrite and _call(f"cannot check {target}", fs.exists, final):
                if _call(f"cannot read {target}", fs.cat_file, final) != data:
                    raise FileExistsError(f"{target}: already exists (use --force to overwrite)")
                _call(f"cannot remove {temporary}", fs.rm_file, temp_path)
                continue
            # A server-side copy on S3: the final key appears complete or not at all.
            _call(f"cannot write {target}", fs.cp_file, temp_path, final)
            committed.append(target)
            _call(f"cannot remove {temporary}", fs.rm_file, temp_path)
    except BaseException:
        for temporary, _, _ in staged:
            _quietly_remove(temporary)
        for target in committed:
            _quietly_remove(target)
        raise


def _call(what: str, function: Any, *args: Any) -> Any:  # noqa: ANN401 - fsspec's calls
    try:
        return function(*args)
    except FileExistsError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore and friends raise their own types
        raise OSError(f"{what} ({one_line(exc)})") from None


def _quietly_remove(target: ObjectPath) -> None:
    fs, path = filesystem(target)
    try:
        if fs.exists(path):
            fs.rm_file(path)
    except Exception:  # noqa: BLE001, S110 - cleanup after a failure must not hide that failure
        pass
