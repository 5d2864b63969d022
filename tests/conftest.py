from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23.png"


@pytest.fixture(scope="session")
def sample_rgb() -> np.ndarray:
    """The bundled Kodak sample (768 x 512)."""
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


@pytest.fixture(scope="session")
def small_rgb(sample_rgb: np.ndarray) -> np.ndarray:
    """A 203 x 157 crop with sides that are not multiples of 8."""
    return np.ascontiguousarray(sample_rgb[100:257, 300:503])


@pytest.fixture()
def small_png(tmp_path: Path, small_rgb: np.ndarray) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(small_rgb).save(path)
    return path


@pytest.fixture()
def tiny_training(tmp_path: Path) -> Callable[..., dict]:
    """Runs ``invgray_cli.training.train`` for a few steps of 2 random 64 px crops (validation on
    the same 2 photos) with the given extra arguments; returns the last checkpoint."""
    import torch

    from invgray_cli.training.train import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"p{index}.png")

    def run(*extra: str, steps: int = 2) -> dict:
        threads = torch.get_num_threads()  # --threads sets it process-wide; later tests need it back
        try:
            main(["--data", str(folder), "--val", str(folder), "--out", str(tmp_path / "run"), "--crop", "64",
                  "--batch", "2", "--steps", str(steps), "--val-every", str(steps), "--val-steps", "2", *extra])
        finally:
            torch.set_num_threads(threads)
        return torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)

    return run


# --- object storage and the cluster engine (tests/test_storage.py, tests/test_cluster.py) ---


@pytest.fixture(scope="session")
def photo_files(sample_rgb: np.ndarray) -> dict[str, bytes]:
    """A small stand-in for Kodak24, made from the bundled sample: photos of several
    sizes and kinds (PNG, a JPEG that keeps its own luma, alpha, gray), one in a
    subfolder. Relative name -> file bytes."""
    import io

    def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    photo = Image.fromarray(sample_rgb)
    rgba = photo.crop((0, 0, 320, 240)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((320, 240)))
    return {
        "kodim23.png": encoded(photo, "PNG"),
        "mirrored.png": encoded(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((0, 0, 512, 384)), "PNG"),
        "portrait.png": encoded(photo.transpose(Image.Transpose.ROTATE_90).crop((0, 0, 360, 500)), "PNG"),
        "camera.jpg": encoded(photo.crop((64, 32, 704, 512)), "JPEG", quality=88),
        "alpha.png": encoded(rgba, "PNG"),
        "sub/gray.png": encoded(photo.convert("L").crop((100, 100, 356, 292)), "PNG"),
    }


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server on localhost (moto's server mode), for the whole
    session; AWS_* variables point boto and s3fs at it (set before any Ray worker
    starts, so workers inherit them)."""
    pytest.importorskip("s3fs")
    pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    patch = pytest.MonkeyPatch()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        patch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        patch.delenv(name, raising=False)
    try:
        yield endpoint
    finally:
        patch.undo()
        server.stop()


@pytest.fixture()
def s3(s3_endpoint: str):  # noqa: ANN201 - a boto3 S3 client
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture()
def bucket(s3, request: pytest.FixtureRequest) -> str:  # noqa: ANN001
    """A fresh, empty bucket named after the test."""
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-b"
    s3.create_bucket(Bucket=name)
    return name
