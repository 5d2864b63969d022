"""Would onnxruntime be a better CPU backend than torch? A measured answer.

    pip install onnx onnxruntime
    python benchmarks/onnxruntime_trial.py [FOLDER] [--threads 2] [--limit 8]

Exports the bundled model's decoder (gray + symbols -> RGB) and encoder (photo + gray
-> symbols) to ONNX, runs both backends on the same inputs (FOLDER, default Kodak24,
gray JPEG q90, default level) and prints median network time per image, the PSNR
between the two backends' restored images, and how many encoder symbols differ.
invgray adopts onnxruntime only if it wins clearly and decodes within 0.05 dB.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invgray_cli.gray import jpeg_round_trip, luma  # noqa: E402
from invgray_cli.inference import _pad, _to_tensor, psnr  # noqa: E402
from invgray_cli.zoo import level_step, load_model  # noqa: E402

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"


class _Method(torch.nn.Module):
    """One of the network's methods (``quantise`` or ``synthesise``) as a module to export."""

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, image: torch.Tensor, other: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(image, other, step)


def export(module: torch.nn.Module, inputs: tuple, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    axes = {name: {2: f"{name}_h", 3: f"{name}_w"} for name in names[:2]}
    torch.onnx.export(module, inputs, buffer, input_names=names, output_names=["out"], dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    return buffer.getvalue()


def median_seconds(fn, repeat: int = 5) -> float:  # noqa: ANN001 - any callable
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=8, help="images used")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model()
    step = level_step(model.model_id, "default")
    stride = model.cfg.symbol_stride
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() == ".png")[: args.limit]

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    probe_rgb, probe_gray = torch.rand(1, 3, 64, 96), torch.rand(1, 1, 64, 96)
    step_t = torch.tensor(step, dtype=torch.float32)
    encoder = ort.InferenceSession(export(_Method(model, "quantise"), (probe_rgb, probe_gray, step_t),
                                          ["rgb", "gray", "step"]),
                                   options, providers=["CPUExecutionProvider"])
    probe_symbols = torch.zeros(1, model.cfg.symbol_planes, 2, 3)
    decoder = ort.InferenceSession(export(_Method(model, "synthesise"), (probe_gray, probe_symbols, step_t),
                                          ["gray", "symbols", "step"]), options, providers=["CPUExecutionProvider"])

    rows = {"encoder torch": [], "encoder onnxruntime": [], "decoder torch": [], "decoder onnxruntime": []}
    agreement, differing_symbols, total_symbols = [], 0, 0
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gray = jpeg_round_trip(luma(rgb), 90)
        h, w = gray.shape
        rgb_t, gray_t = _pad(_to_tensor(rgb, "cpu"), stride), _pad(_to_tensor(gray, "cpu"), stride)
        with torch.inference_mode():
            symbols = model.quantise(rgb_t, gray_t, step)
            rows["encoder torch"].append(median_seconds(lambda: model.quantise(rgb_t, gray_t, step)))
            restored = model.synthesise(gray_t, symbols, step)
            rows["decoder torch"].append(median_seconds(lambda: model.synthesise(gray_t, symbols, step)))
        feed_enc = {"rgb": rgb_t.numpy(), "gray": gray_t.numpy(), "step": step_t.numpy()}
        ort_symbols = encoder.run(None, feed_enc)[0]
        rows["encoder onnxruntime"].append(median_seconds(lambda: encoder.run(None, feed_enc)))
        differing_symbols += int(np.count_nonzero(ort_symbols != symbols.numpy()))
        total_symbols += ort_symbols.size
        feed_dec = {"gray": gray_t.numpy(), "symbols": symbols.numpy(), "step": step_t.numpy()}
        ort_restored = decoder.run(None, feed_dec)[0]
        rows["decoder onnxruntime"].append(median_seconds(lambda: decoder.run(None, feed_dec)))

        def pixels(x: np.ndarray) -> np.ndarray:
            return (np.clip(x[0, :, :h, :w], 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)

        agreement.append(psnr(pixels(ort_restored), pixels(restored.numpy())))

    print(f"{args.folder}: {len(files)} images; {args.threads} threads; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}\n")
    print("| network | median s/image |")
    print("|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.4f} |")
    finite = [a for a in agreement if np.isfinite(a)]
    print(f"\nrestored images, onnxruntime vs torch: {len(agreement) - len(finite)} identical, "
          f"lowest PSNR between them {min(finite) if finite else float('inf'):.1f} dB")
    print(f"encoder symbols that differ: {differing_symbols} of {total_symbols}")


if __name__ == "__main__":
    main()
