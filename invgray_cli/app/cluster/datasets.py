"""invgray in Ray Data pipelines of your own: functions and callable classes that fit
``Dataset.map_batches`` and code file bytes the way the CLI does.

    ds = ray.data.read_binary_files("s3://bucket/photos")
    ds = ds.map_batches(BatchEncoder, fn_constructor_kwargs={"device": "cpu"},
                        compute=ray.data.ActorPoolStrategy(size=4))

Nothing here imports Ray: any batch of columns (a dict of numpy arrays, a pandas or a
pyarrow table) will do. torch is imported only where a GPU decode batches its network
passes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from invgray_cli.app.filework import CUDA_BATCH
from invgray_cli.app.storage import one_line
from invgray_cli.codec import decode_photo, encode
from invgray_cli.engines.engine import device_name, engine_for
from invgray_cli.engines.registry import UnknownModelError
from invgray_cli.format.container import InvalidResidualError
from invgray_cli.imaging.images import (
    COLOUR_FORMATS,
    ImageReadError,
    read_photo,
    save_colour,
)


def _columns(batch: Any) -> dict[str, list[Any]]:  # noqa: ANN401 - numpy dict, pandas or pyarrow batch
    if hasattr(batch, "to_pydict"):
        return batch.to_pydict()
    if hasattr(batch, "columns") and hasattr(batch, "iloc"):
        return {name: batch[name].tolist() for name in batch.columns}
    return {name: list(values) for name, values in batch.items()}


def _objects(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def encode_batch(batch: Any, *, quality: int | None = None, gray_format: str | None = None,  # noqa: ANN401
                 level: str = "default", step: float | None = None, device: str = "cpu",
                 keep_metadata: bool = True, effort: int = 1, max_error: int | None = None) -> dict[str, np.ndarray]:
    """``ds.map_batches(encode_batch, fn_kwargs=...)``: encode the photo file bytes of
    column ``bytes`` (as ``ray.data.read_binary_files`` gives them) as the CLI does
    (``gray_format=None``: jpg, or for a ``max_error`` bound the gray the CLI picks).

    Returns the batch's columns plus ``gray`` and ``residual`` (file bytes) and
    ``error`` ('' when the photo encoded; else the one-line reason, and empty outputs):
    one bad photo never fails the pipeline. The network loads once per worker process
    (engines are cached), so a task pool works; :class:`BatchEncoder` loads it up front."""
    columns = _columns(batch)
    grays, residuals, errors = [], [], []
    for data in columns["bytes"]:
        try:
            photo = read_photo(bytes(data), lossless_luma=gray_format in ("jpg", None) and quality is None)
            encoded = encode(photo, quality=quality, gray_format=gray_format, level=level, step=step, device=device,
                             keep_metadata=keep_metadata, effort=effort, max_error=max_error)
            grays.append(encoded.gray)
            residuals.append(encoded.residual)
            errors.append("")
        except (ImageReadError, ValueError, OSError) as exc:
            grays.append(b"")
            residuals.append(b"")
            errors.append(one_line(exc))
    out = {name: _objects(values) for name, values in columns.items()}
    out.update(gray=_objects(grays), residual=_objects(residuals), error=np.array(errors, dtype=object))
    return out


def decode_batch(batch: Any, *, device: str = "cpu", format: str = "png",  # noqa: ANN401, A002 - the file format
                 batcher: Any = None) -> dict[str, np.ndarray]:  # noqa: ANN401
    """``ds.map_batches(decode_batch)``: restore the colour photos of column ``gray``
    (gray image bytes; ``bytes`` when there is no ``gray`` column) with column
    ``residual`` where there is one (else the residual embedded in the gray).

    Returns the batch's columns plus ``image`` (the restored photo as a ``format``
    file: png, jpg, webp, tif or bmp) and ``error`` ('' or the one-line reason)."""
    columns = _columns(batch)
    grays = columns["gray"] if "gray" in columns else columns["bytes"]
    residuals = columns.get("residual") or [None] * len(grays)
    fmt = COLOUR_FORMATS["." + format.lower().lstrip(".")]

    def one(gray: Any, residual: Any) -> tuple[bytes, str]:  # noqa: ANN401
        try:
            photo = decode_photo(bytes(gray), bytes(residual) if residual else None, device=device, batcher=batcher)
            return save_colour(photo, fmt), ""
        except (InvalidResidualError, UnknownModelError, ValueError, OSError) as exc:
            return b"", one_line(exc)

    if batcher is not None and len(grays) > 1:  # same-size images meet in the batcher's network passes
        with ThreadPoolExecutor(max_workers=len(grays)) as pool:
            results = list(pool.map(one, grays, residuals))
    else:
        results = [one(g, r) for g, r in zip(grays, residuals)]
    out = {name: _objects(values) for name, values in columns.items()}
    out.update(image=_objects([image for image, _ in results]), error=np.array([e for _, e in results], dtype=object))
    return out


class BatchEncoder:
    """``ds.map_batches(BatchEncoder, fn_constructor_kwargs={...}, compute=ActorPoolStrategy(size=N))``:
    :func:`encode_batch` with the network loaded once, when the actor starts."""

    def __init__(self, *, device: str = "auto", **options: Any) -> None:  # noqa: ANN401
        self.options = dict(options, device=device_name(device))
        engine_for(device=self.options["device"]).thresholds()

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:  # noqa: ANN401
        return encode_batch(batch, **self.options)


class BatchDecoder:
    """``ds.map_batches(BatchDecoder, batch_size=32, num_gpus=1, compute=ActorPoolStrategy(size=N))``:
    :func:`decode_batch` with the network loaded once; on a GPU, same-size images of a
    batch run through the network together (up to ``max_batch`` at a time)."""

    def __init__(self, *, device: str = "auto", format: str = "png", max_batch: int = CUDA_BATCH) -> None:  # noqa: A002
        self.device, self.format = device_name(device), format
        engine = engine_for(device=self.device)
        self.batcher = None
        if self.device.startswith("cuda") and max_batch > 1:
            import torch

            from invgray_cli.engines.batcher import NetworkBatcher

            self.batcher = NetworkBatcher(engine.model, torch.device(self.device), max_batch=max_batch)

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:  # noqa: ANN401
        return decode_batch(batch, device=self.device, format=self.format, batcher=self.batcher)
