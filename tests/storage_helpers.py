"""Helpers for the object-storage and cluster tests: objects in a bucket and files in a
folder as {relative name: bytes}, so that a bucket run and a local run compare with ==."""

from __future__ import annotations

from pathlib import Path


def put_files(s3, bucket: str, prefix: str, files: dict[str, bytes]) -> None:  # noqa: ANN001
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)


def objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:  # noqa: ANN001
    """Key (below prefix) -> bytes of every object under the prefix."""
    out: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"][len(prefix):].lstrip("/")
            out[key] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder
