"""Object storage paths (invgray_cli/app/storage.py) and the streamed plans that name their
outputs (jobs.plan_encode / plan_decode), on fsspec's in-memory store and on a real
S3-compatible server (moto's server mode) with the local engine. The Ray engine is in
test_cluster.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from storage_helpers import local_files, objects, put_files, write_files
from typer.testing import CliRunner

from invgray_cli.app.cli import app
from invgray_cli.app.jobs import ClashGuard, Job, plan_encode, stem_of
from invgray_cli.app.storage import (
    ObjectPath,
    location,
    temporary_of,
    walk_files,
    write_set,
)

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def test_object_paths_name_outputs_as_local_paths_do() -> None:
    gray = ObjectPath("s3://bucket/photos/2024/kodim01.gray.jpg")
    assert (gray.name, gray.stem, gray.suffix) == ("kodim01.gray.jpg", "kodim01.gray", ".jpg")
    assert stem_of(gray) == "kodim01" and gray.parent == ObjectPath("s3://bucket/photos/2024")
    assert gray.with_name("kodim01.residual.bin").url == "s3://bucket/photos/2024/kodim01.residual.bin"
    assert ObjectPath("s3://bucket/out/") / "sub/dir" / "a.png" == ObjectPath("s3://bucket/out/sub/dir/a.png")
    assert ObjectPath("s3://bucket").parent == ObjectPath("s3://bucket")
    assert ObjectPath("s3://bucket/a/b.png").relative_to(ObjectPath("s3://bucket")) == "a/b.png"
    assert location("file:///tmp/x.png") == Path("/tmp/x.png") and location("x.png") == Path("x.png")
    assert isinstance(location("gs://b/k"), ObjectPath) and str(location("S3://b/k/")) == "s3://b/k"


def _memory_tree(root: str, names: list[str]) -> ObjectPath:
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
    for name in names:
        fs.pipe_file(f"{root}/{name}", name.encode())
    return ObjectPath(f"memory://{root}")


def test_listing_streams_in_the_order_of_full_names() -> None:
    """Folders sort as 'name/', so a folder's files come where an object store lists
    them: 'sub.png' before 'sub/x.png', and hidden names and temporary keys left out."""
    pytest.importorskip("fsspec")
    names = ["b.png", "sub/x.png", "sub.png", "a.jpg", "sub/deeper/y.png", ".hidden.png", ".a.gray.jpg.invgray.part",
             "suba.png"]
    root = _memory_tree("listing", names)
    found = [path.relative_to(root) for path in walk_files(root, recursive=True)]
    assert found == sorted(n for n in names if not n.startswith("."))
    assert [path.relative_to(root) for path in walk_files(root, recursive=False)] == ["a.jpg", "b.png", "sub.png",
                                                                                      "suba.png"]


def test_local_streamed_listing_finds_what_the_folder_listing_finds(tmp_path: Path) -> None:
    for name in ["b.png", "sub/x.png", "sub.png", "a.jpg", ".hidden.png", "sub/.dot/z.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    streamed = list(walk_files(tmp_path, recursive=True))
    assert sorted(streamed) == sorted(p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert [str(p) for p in streamed] == sorted(str(p) for p in streamed)


def test_a_set_is_written_whole_or_not_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fsspec")
    import fsspec

    fs = fsspec.filesystem("memory")
    root = _memory_tree("sets", [])
    gray, residual = root / "a.gray.jpg", root / "a.residual.bin"
    real_copy = type(fs).cp_file

    def failing_copy(self, path1, path2, **kwargs):  # noqa: ANN001, ANN202
        if path2.endswith(".gray.jpg"):  # the second move of the set (the gray goes last)
            raise OSError("disk full")
        return real_copy(self, path1, path2, **kwargs)

    monkeypatch.setattr(type(fs), "cp_file", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        write_set([(gray, b"gray"), (residual, b"residual")])
    assert not any(fs.exists(p.key) for p in (gray, residual, temporary_of(gray), temporary_of(residual)))
    monkeypatch.undo()

    write_set([(gray, b"gray"), (residual, b"residual")])
    assert fs.cat_file(gray.key) == b"gray" and fs.cat_file(residual.key) == b"residual"
    assert sorted(Path(p).name for p in fs.ls(root.key, detail=False)) == ["a.gray.jpg", "a.residual.bin"]
    with pytest.raises(FileExistsError, match="already exists"):  # other bytes: never replaced without --force
        write_set([(gray, b"other"), (residual, b"residual")])
    assert fs.cat_file(gray.key) == b"gray"
    fs.rm_file(gray.key)  # a set stopped between its moves: the residual is there, the gray is not
    write_set([(gray, b"gray"), (residual, b"residual")])  # the same bytes: completed, not refused
    assert fs.cat_file(gray.key) == b"gray"
    write_set([(gray, b"new"), (residual, b"new")], overwrite=True)
    assert fs.cat_file(gray.key) == b"new"


def test_an_existing_output_set_is_refused_unless_a_retried_task_finds_its_own() -> None:
    """On the cluster, a file whose worker died is run again by Ray: its first attempt may
    have committed everything, which must not turn into 'already exists'."""
    pytest.importorskip("fsspec")
    from invgray_cli.app.filework import check_writable
    from invgray_cli.app.jobs import JobError

    root = _memory_tree("retried", ["a.gray.jpg", "a.residual.bin", "b.gray.jpg"])
    complete, partial = [root / "a.gray.jpg", root / "a.residual.bin"], [root / "b.gray.jpg", root / "b.residual.bin"]
    with pytest.raises(JobError, match="a.gray.jpg already exists"):
        check_writable(complete, ["memory://retried/a.png"], force=False)
    with pytest.raises(JobError, match="a.gray.jpg already exists"):
        check_writable(complete, ["memory://retried/a.png"], force=False, retried=lambda: False)
    check_writable(complete, ["memory://retried/a.png"], force=False, retried=lambda: True)
    check_writable(partial, ["memory://retried/b.png"], force=False)  # write_set compares the bytes
    check_writable(complete, ["memory://retried/a.png"], force=True)
    with pytest.raises(JobError, match="would overwrite an input"):
        check_writable(complete, ["memory://retried/a.gray.jpg"], force=True)


def test_clash_guard_finds_clashes_in_a_stream_and_forgets_closed_prefixes() -> None:
    """A million keys do not sit in memory: only claims whose folder and stem are still
    open are kept."""
    guard, largest, errors = ClashGuard(), 0, []
    out = ObjectPath("s3://out")
    names = sorted(f"d{folder:03d}/p{index:04d}.{ext}" for folder in range(20) for index in range(500)
                   for ext in (("jpg", "png") if index % 100 == 0 else ("png",)))
    for name in names:
        folder, file = name.rsplit("/", 1)
        stem = file.rsplit(".", 1)[0]
        job = Job(name, name, [out / folder / f"{stem}.gray.jpg", out / folder / f"{stem}.residual.bin"])
        guard.check(f"{out}/{folder}/{file}", job, f"{out}/{folder}/{stem}")
        largest = max(largest, len(guard.claims))
        errors += [job.label] if job.error else []
    assert len(names) == 10_100 and largest <= 4
    assert errors == [n for n in names if n.endswith(".png") and int(n.split("/p")[1][:4]) % 100 == 0]


def test_plan_fails_one_of_two_inputs_that_would_write_the_same_outputs() -> None:
    """Across arguments too: the streams are merged in output order, so the input whose
    name sorts first writes, the other fails (local folders and object storage alike)."""
    pytest.importorskip("fsspec")
    one = _memory_tree("clash-one", ["a.png", "b.png"])
    two = _memory_tree("clash-two", ["a.jpg"])
    jobs = list(plan_encode([one.url, two.url], ObjectPath("memory://clash-out"), ".gray.jpg", False, False))
    assert [(j.label, bool(j.error)) for j in jobs] == [
        ("memory://clash-two/a.jpg", False), ("memory://clash-one/a.png", True), ("memory://clash-one/b.png", False)]
    assert jobs[1].error == ("output memory://clash-out/a.gray.jpg would also be written for memory://clash-two/a.jpg "
                             "(rename one, or use -o)")


def test_bucket_to_bucket_with_the_local_engine_writes_the_local_bytes(
        tmp_path: Path, photo_files: dict[str, bytes], s3, bucket: str) -> None:  # noqa: ANN001
    photos = write_files(tmp_path / "photos", photo_files)
    assert invoke("encode", photos, "-r", "--out-dir", tmp_path / "gray", "--device", "cpu").exit_code == 0
    assert invoke("decode", tmp_path / "gray", "-r", "--out-dir", tmp_path / "colour", "--device", "cpu").exit_code == 0
    put_files(s3, bucket, "photos", photo_files)

    result = invoke("encode", f"s3://{bucket}/photos", "-r", "--out-dir", f"s3://{bucket}/gray", "--device", "cpu",
                    "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert objects(s3, bucket, "gray") == local_files(tmp_path / "gray")
    assert f"s3://{bucket}/photos/sub/gray.png: s3://{bucket}/gray/sub/gray.gray.jpg" in result.stdout
    again = invoke("encode", f"s3://{bucket}/photos", "-r", "--out-dir", f"s3://{bucket}/gray", "--device", "cpu",
                   "--skip-existing", "--json")
    assert again.exit_code == 0 and {json.loads(line)["status"] for line in again.stdout.splitlines()} == {"skipped"}
    refused = invoke("encode", f"s3://{bucket}/photos/kodim23.png", "--out-dir", f"s3://{bucket}/gray")
    assert refused.exit_code == 1 and "already exists (use --force to overwrite)" in refused.stderr

    result = invoke("decode", f"s3://{bucket}/gray", "-r", "--out-dir", f"s3://{bucket}/colour", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert objects(s3, bucket, "colour") == local_files(tmp_path / "colour")
    # Mixed: a local folder into a bucket, and a bucket into a local folder.
    assert invoke("encode", photos / "kodim23.png", "--out-dir", f"s3://{bucket}/mixed").exit_code == 0
    assert invoke("decode", f"s3://{bucket}/mixed/kodim23.gray.jpg", "-o", tmp_path / "m.png").exit_code == 0
    assert (tmp_path / "m.png").read_bytes() == (tmp_path / "colour" / "kodim23.color.png").read_bytes()


def test_object_errors_are_one_line_and_the_rest_finish(s3, bucket: str, photo_files: dict[str, bytes]) -> None:  # noqa: ANN001
    put_files(s3, bucket, "in", {"good.png": photo_files["alpha.png"], "bad.png": b"not an image"})
    result = invoke("encode", f"s3://{bucket}/in", f"s3://{bucket}/missing.png", f"s3://no-such-bucket-{bucket}/x",
                    "--out-dir", f"s3://{bucket}/out", "--device", "cpu")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("invgray: error:")]
    assert errors == [f"invgray: error: s3://{bucket}/in/bad.png: not a recognised image file",
                      f"invgray: error: s3://{bucket}/missing.png: no such file",
                      f"invgray: error: s3://no-such-bucket-{bucket}/x: no such file"]
    assert sorted(objects(s3, bucket, "out")) == ["good.gray.jpg", "good.residual.bin"]
    before = objects(s3, bucket, "in")
    result = invoke("encode", f"s3://{bucket}/in/good.png", "-o", f"s3://{bucket}/in/good.png", "--force")
    assert result.exit_code == 1 and "would overwrite an input" in result.stderr
    assert objects(s3, bucket, "in") == before  # an input is never replaced, not even with --force


def test_listing_reads_one_page_at_a_time(s3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import s3fs

    from invgray_cli.app import storage

    put_files(s3, bucket, "many", {f"p{i:02d}.png": b"x" for i in range(25)})
    calls = []
    real = s3fs.S3FileSystem.call_s3

    def counting(self, method, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append((method, kwargs.get("MaxKeys")))
        return real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", counting)
    monkeypatch.setattr(storage, "LIST_PAGE", 10)
    listing = walk_files(ObjectPath(f"s3://{bucket}/many"), recursive=True)
    assert next(listing).name == "p00.png" and calls == [("list_objects_v2", 10)]
    assert len(list(listing)) == 24 and calls == [("list_objects_v2", 10)] * 3


def test_missing_packages_are_one_line_errors_naming_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                                small_png: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    result = invoke("encode", small_png, "--engine", "ray")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "invgray: error: --engine ray needs Ray Data: pip install 'invgray[cluster]'"]
    monkeypatch.setitem(sys.modules, "fsspec", None)
    result = invoke("encode", "s3://bucket/photo.png")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "invgray: error: s3:// paths need fsspec: pip install 'invgray[cluster]'"]
    result = invoke("decode", small_png, "--address", "auto")
    assert result.exit_code == 2 and "--engine ray" in result.stderr


def test_help_and_local_runs_import_neither_ray_nor_fsspec(tmp_path: Path) -> None:
    script = ("import sys\nfrom invgray_cli.app.cli import main\nsys.argv = ['invgray'] + sys.argv[1:]\n"
              "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
              "print('loaded:', sorted(m for m in ('ray', 'fsspec', 's3fs', 'invgray_cli.app.cluster') if m in sys.modules),"
              " file=sys.stderr)\n")
    sample = ROOT / "samples" / "kodim23.png"
    for arguments in (["--help"], ["encode", sample, "-o", tmp_path / "a.gray.jpg", "--device", "cpu"],
                      ["decode", tmp_path / "a.gray.jpg", "-o", tmp_path / "a.png", "--device", "cpu"]):
        result = subprocess.run([sys.executable, "-c", script, *map(str, arguments)], capture_output=True, text=True,
                                cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines()[-1] == "loaded: []", result.stderr
