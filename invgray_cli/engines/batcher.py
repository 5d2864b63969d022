"""Batched network calls for folder runs: worker threads read, decode and unpack files
while one thread runs the network on whole batches.

Folder decodes call :meth:`NetworkBatcher.synthesise` from ``--jobs`` worker threads;
the batcher's own thread takes the waiting requests that share a padded size (up to
``max_batch``), stacks them into one forward pass and hands each caller its image.
On a GPU this keeps the device fed with large batches while the CPU threads do the
file and JPEG work; on a CPU one image already fills the cores, so the CLI uses
batches of 1 there (see ``benchmarks/speed.py --batch``).

Each image is computed as in :func:`inference.synthesise_image`, padded the same way,
with its own quantisation step; only float summation order may differ inside a
batched convolution, which moves a rare pixel by one level (``tests/test_batcher.py``
bounds it). Encoding is never batched, so residual bytes cannot depend on what else
is in a folder.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np
import torch

from invgray_cli.engines import tiling
from invgray_cli.engines.torch_engine import synthesise_batch, synthesise_image
from invgray_cli.model.network import InvGrayNet


class _Request:
    __slots__ = ("gray", "symbols", "step", "key", "future")

    def __init__(self, gray: np.ndarray, symbols: np.ndarray, step: float, stride: int) -> None:
        self.gray, self.symbols, self.step = gray, symbols, step
        padded = (-(-gray.shape[0] // stride) * stride, -(-gray.shape[1] // stride) * stride)
        self.key = (padded, symbols.shape)
        self.future: Future[np.ndarray] = Future()


class NetworkBatcher:
    """Thread-safe front of one model on one device; use as a context manager."""

    def __init__(self, model: InvGrayNet, device: torch.device, max_batch: int = 8,
                 wait_seconds: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model, self.device, self.max_batch, self.wait_seconds = model, device, max_batch, wait_seconds
        self.batches_run = 0
        self.images_run = 0
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._held: list[_Request] = []
        self._thread = threading.Thread(target=self._serve, name="invgray-network", daemon=True)
        self._thread.start()

    def __enter__(self) -> NetworkBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def synthesise(self, decoded_gray: np.ndarray, symbols: np.ndarray, step: float) -> np.ndarray:
        """Same contract as :func:`inference.synthesise_image`; blocks until done."""
        height, width = decoded_gray.shape
        if height * width > tiling.WHOLE_IMAGE_PIXELS or self.max_batch == 1:
            # Tiled images are batches of their own; batch size 1 needs no hand-over.
            return synthesise_image(self.model, decoded_gray, symbols, step, self.device)
        request = _Request(decoded_gray, symbols, step, self.model.cfg.symbol_stride)
        self._queue.put(request)
        return request.future.result()

    def _next(self, timeout: float | None) -> _Request | None:
        if self._held:
            return self._held.pop(0)
        try:
            return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            raise TimeoutError from None

    def _serve(self) -> None:
        closing = False
        while not closing or self._held:
            first = self._next(None) if not closing else self._held.pop(0)
            if first is None:
                closing = True
                continue
            batch, others = [first], []
            while len(batch) < self.max_batch:
                try:
                    request = self._next(self.wait_seconds)
                except TimeoutError:
                    break
                if request is None:
                    closing = True
                    break
                (batch if request.key == first.key else others).append(request)
            self._held = others + self._held
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        try:
            images = synthesise_batch(self.model, [r.gray for r in batch], [r.symbols for r in batch],
                                      [r.step for r in batch], self.device)
            self.batches_run += 1
            self.images_run += len(batch)
            for request, image in zip(batch, images):
                request.future.set_result(image)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear of the failure
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
