"""The cluster engine (invgray_cli/app/cluster/) on a real local Ray cluster (ray.init with
2 CPUs) against a real S3-compatible server on localhost (moto's server mode): bucket to
bucket, byte for byte the local CLI's outputs; broken files among good ones; a worker
killed in the middle of a job; and the map_batches functions of the Python API."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from storage_helpers import local_files, objects, put_files, write_files
from typer.testing import CliRunner

from invgray_cli.app.cli import app

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

runner = CliRunner()


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str) -> Iterator[None]:
    """A local Ray cluster of 2 CPUs for this module, started after the S3 variables are
    set, so that its workers inherit them. The CLI finds it running and uses it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def _local_run(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, Path]:
    """The local CLI's outputs (plain paths, local engine): the reference bytes."""
    photos = write_files(tmp_path / "photos", files)
    gray, colour = tmp_path / "gray", tmp_path / "colour"
    encoded = invoke("encode", photos, "-r", "--out-dir", gray, "--device", "cpu")
    assert encoded.exit_code in (0, 1), encoded.output  # 1: a test's broken photos
    assert invoke("decode", gray, "-r", "--out-dir", colour, "--device", "cpu").exit_code in (0, 1)
    return gray, colour


def test_kodak_bucket_to_bucket_on_ray_writes_the_local_clis_bytes(
        cluster: None, tmp_path: Path, photo_files: dict[str, bytes], s3, bucket: str) -> None:  # noqa: ANN001
    gray, colour = _local_run(tmp_path, photo_files)
    put_files(s3, bucket, "kodak", photo_files)

    result = invoke("encode", f"s3://{bucket}/kodak", "-r", "--out-dir", f"s3://{bucket}/gray", "--engine", "ray",
                    "--workers", "2")
    assert result.exit_code == 0, result.output
    assert objects(s3, bucket, "gray") == local_files(gray)
    assert len(result.stdout.splitlines()) == len(photo_files)
    assert f"encode: {len(photo_files)} done, 0 skipped, 0 failed" in result.stderr

    result = invoke("decode", f"s3://{bucket}/gray", "-r", "--out-dir", f"s3://{bucket}/colour", "--engine", "ray")
    assert result.exit_code == 0, result.output
    assert objects(s3, bucket, "colour") == local_files(colour)

    again = invoke("decode", f"s3://{bucket}/gray", "-r", "--out-dir", f"s3://{bucket}/colour", "--engine", "ray",
                   "--skip-existing")
    assert again.exit_code == 0 and f"0 done, {len(photo_files)} skipped" in again.stderr
    refused = invoke("decode", f"s3://{bucket}/gray/kodim23.gray.jpg", "--out-dir", f"s3://{bucket}/colour",
                     "--engine", "ray")
    assert refused.exit_code == 1 and "kodim23.color.png already exists (use --force to overwrite)" in refused.stderr


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("invgray: error:")]


def test_three_broken_files_fail_alone_and_the_rest_are_restored(
        cluster: None, tmp_path: Path, photo_files: dict[str, bytes], s3, bucket: str) -> None:  # noqa: ANN001
    good = {name: data for name, data in photo_files.items() if name in {"kodim23.png", "alpha.png", "sub/gray.png"}}
    broken = {"empty.jpg": b"", "junk.png": b"this is not an image", "sub/truncated.png": good["kodim23.png"][:5000]}
    gray, colour = _local_run(tmp_path, good)
    put_files(s3, bucket, "photos", {**good, **broken})

    result = invoke("encode", f"s3://{bucket}/photos", "-r", "--out-dir", f"s3://{bucket}/gray", "--engine", "ray")
    assert result.exit_code == 1
    assert sorted(line.split(": ")[2] for line in _errors(result.stderr)) == sorted(
        f"s3://{bucket}/photos/{name}" for name in broken)
    assert objects(s3, bucket, "gray") == local_files(gray)  # nothing for a broken photo, the rest exact

    # Three broken pairs among the good ones: a gray that is no image, a residual that is no
    # residual, a gray without any residual.
    put_files(s3, bucket, "gray", {"bad1.gray.jpg": b"\xff\xd8 not really a JPEG",
                                   "bad2.gray.jpg": local_files(gray)["alpha.gray.jpg"],
                                   "bad2.residual.bin": b"IGRS garbage",
                                   "sub/bad3.gray.jpg": local_files(gray)["kodim23.gray.jpg"]})
    result = invoke("decode", f"s3://{bucket}/gray", "-r", "--out-dir", f"s3://{bucket}/colour", "--engine", "ray",
                    "--json")
    assert result.exit_code == 1
    errors = _errors(result.stderr)
    assert len(errors) == 3 and all(len(line.splitlines()) == 1 for line in errors)
    assert {line.split(": ")[2].split(" ")[0] for line in errors} == {
        f"s3://{bucket}/gray/bad1.gray.jpg", f"s3://{bucket}/gray/bad2.gray.jpg", f"s3://{bucket}/gray/sub/bad3.gray.jpg"}
    assert "no residual found" in result.stderr
    assert objects(s3, bucket, "colour") == local_files(colour)  # every good pair restored, exactly


def _file_workers() -> list[int]:
    """Processes of this test's Ray workers that run FileWorker (Ray names them after it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"MapBatches(FileWorker)" in command:
                pids.append(int(entry))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes through /proc")
def test_a_worker_killed_mid_job_leaves_no_partial_object_and_the_rerun_completes(
        cluster: None, tmp_path: Path, sample_rgb: np.ndarray, s3, bucket: str) -> None:  # noqa: ANN001
    photo = Image.fromarray(sample_rgb)
    files = {}
    for index in range(12):  # 768 x 512 each: long enough that a kill lands while files remain
        buffer = io.BytesIO()
        photo.rotate(index * 7).save(buffer, "PNG")
        files[f"p{index:02d}.png"] = buffer.getvalue()
    gray, _ = _local_run(tmp_path, files)
    expected = local_files(gray)
    put_files(s3, bucket, "photos", files)
    killed: dict[str, object] = {}

    def kill_a_worker_after_the_first_output() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="gray/").get("Contents", [])]
            written = [key for key in keys if key.endswith(".gray.jpg")]
            workers = _file_workers()
            if written and workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.update(pid=workers[0], written=len(written))
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_after_the_first_output, daemon=True)
    killer.start()
    result = invoke("encode", f"s3://{bucket}/photos", "--out-dir", f"s3://{bucket}/gray", "--engine", "ray",
                    "--workers", "2")
    killer.join(timeout=5)
    assert killed and 0 < killed["written"] < len(files), killed  # the kill came in the middle of the job
    # Ray restarts the worker and runs its task again: the job finishes, every object holds
    # the local bytes, and no temporary key is left behind.
    assert result.exit_code == 0, result.output
    assert objects(s3, bucket, "gray") == expected  # no temporary key, nothing partial, nothing missing
    # stdout has one line per file and nothing of Ray's (its retry notices are dropped)
    assert sorted(line.split(": ")[0] for line in result.stdout.splitlines()) == [
        f"s3://{bucket}/photos/{name}" for name in sorted(files)]

    # A run that stops for good (here: the outputs of three files deleted, one set half
    # written, one temporary key left as a killed worker leaves it) is resumed by a rerun.
    for key in ("gray/p03.gray.jpg", "gray/p03.residual.bin", "gray/p07.gray.jpg", "gray/p11.residual.bin"):
        s3.delete_object(Bucket=bucket, Key=key)
    s3.put_object(Bucket=bucket, Key="gray/.p11.residual.bin.invgray.part", Body=expected["p11.residual.bin"][:10])
    rerun = invoke("encode", f"s3://{bucket}/photos", "--out-dir", f"s3://{bucket}/gray", "--engine", "ray",
                   "--skip-existing")
    assert rerun.exit_code == 0, rerun.output
    assert "encode: 3 done, 9 skipped, 0 failed" in rerun.stderr
    assert objects(s3, bucket, "gray") == expected


def test_map_batches_functions_in_a_ray_data_pipeline(cluster: None, tmp_path: Path,
                                                      photo_files: dict[str, bytes]) -> None:
    from invgray_cli.app.cluster import BatchEncoder, decode_batch

    names = ["kodim23.png", "camera.jpg", "alpha.png"]
    gray, colour = _local_run(tmp_path, {name: photo_files[name] for name in names})
    rows = [{"path": name, "bytes": photo_files[name]} for name in names] + [{"path": "junk", "bytes": b"junk"}]
    encoded = (ray.data.from_items(rows)
               .map_batches(BatchEncoder, fn_constructor_kwargs={"device": "cpu"}, batch_size=2,
                            compute=ray.data.ActorPoolStrategy(size=1))
               .take_all())
    by_path = {row["path"]: row for row in encoded}
    for name in names:
        stem = Path(name).stem
        assert by_path[name]["error"] == ""
        assert by_path[name]["gray"] == (gray / f"{stem}.gray.jpg").read_bytes()
        assert by_path[name]["residual"] == (gray / f"{stem}.residual.bin").read_bytes()
    assert by_path["junk"]["error"] == "not a recognised image file" and by_path["junk"]["gray"] == b""

    restored = (ray.data.from_items([{"path": row["path"], "gray": row["gray"], "residual": row["residual"]}
                                     for row in encoded])
                .map_batches(decode_batch, fn_kwargs={"device": "cpu"}, batch_size=4)
                .take_all())
    for row in restored:
        if row["path"] == "junk":
            assert row["error"] and row["image"] == b""
        else:
            assert row["image"] == (colour / f"{Path(row['path']).stem}.color.png").read_bytes()


def test_cluster_usage_errors(cluster: None, small_png: Path) -> None:
    result = invoke("encode", small_png, "--engine", "ray", "--device", "cuda")
    assert result.exit_code == 2 and _errors(result.stderr) == [
        "invgray: error: --device cuda: the Ray cluster has no GPUs"]
    assert invoke("encode", "-", "-o", "x.gray.jpg", "--engine", "ray").exit_code == 2
    assert invoke("decode", small_png, "--engine", "ray", "--compare", small_png).exit_code == 2
    assert not small_png.with_name("photo.gray.jpg").exists()


def test_workers_of_another_invgray_stop_the_run_with_one_line(cluster: None, monkeypatch: pytest.MonkeyPatch,
                                                               small_png: Path) -> None:
    """The driver here claims another version: the real workers refuse to start."""
    from invgray_cli.app.cluster import driver

    real = driver.expected_build()
    monkeypatch.setattr(driver, "expected_build", lambda: dict(real, version="9.9.9"))
    result = invoke("encode", small_png, "--engine", "ray", "--workers", "1")
    assert result.exit_code == 1 and result.stdout == ""  # no worker traceback from Ray on stdout either
    assert _errors(result.stderr)[0] == (
        f"invgray: error: cluster run stopped: worker runs invgray {real['version']} (default model "
        f"{real['default_model']}), the driver 9.9.9 (default model {real['default_model']}): install the same "
        "invgray on every node")
    assert not small_png.with_name("photo.gray.jpg").exists()


def test_workers_of_another_invgray_refuse_to_start() -> None:
    from invgray_cli.app.cluster.driver import (
        ClusterError,
        FileWorker,
        error_message,
        expected_build,
    )
    from invgray_cli.app.filework import EncodeSettings

    other = dict(expected_build(), version="0.0.1")
    with pytest.raises(ClusterError, match="install the same invgray on every node") as refused:
        FileWorker("encode", EncodeSettings(inputs=()), False, other, gpu=False, threads=1, batch=1)

    class RayActorDied(Exception):  # what the driver sees: Ray's error, the worker's exception as its cause
        cause = refused.value

    assert error_message(RayActorDied("The actor died in __init__ ...")) == str(refused.value)


def test_decode_batch_runs_same_size_images_through_one_batcher(photo_files: dict[str, bytes]) -> None:
    """What a GPU worker does (same-size images share network passes), on the CPU with torch."""
    import torch

    import invgray_cli
    from invgray_cli.app.cluster import (
        BatchDecoder,
        BatchEncoder,
        decode_batch,
        encode_batch,
    )
    from invgray_cli.engines.batcher import NetworkBatcher
    from invgray_cli.engines.registry import load_model

    assert (invgray_cli.encode_batch, invgray_cli.decode_batch) == (encode_batch, decode_batch)  # the package's API
    assert (invgray_cli.Encoder, invgray_cli.Decoder) == (BatchEncoder, BatchDecoder)  # the old names still work

    photos = [photo_files["kodim23.png"]] * 3 + [photo_files["alpha.png"]]
    encoded = encode_batch({"bytes": photos}, device="cpu")
    # A long wait for company: the three kodim23 meet in one pass, the other size in its own.
    with NetworkBatcher(load_model(device="cpu"), torch.device("cpu"), max_batch=4, wait_seconds=0.5) as batcher:
        batched = decode_batch({"gray": encoded["gray"], "residual": encoded["residual"]}, batcher=batcher)
        assert (batcher.images_run, batcher.batches_run) == (4, 2)
    alone = decode_batch({"gray": encoded["gray"], "residual": encoded["residual"]}, device="cpu")
    for with_batcher, without in zip(batched["image"], alone["image"]):
        a = np.asarray(Image.open(io.BytesIO(with_batcher)), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(without)), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1  # batched float sums: a rare pixel moves one level
