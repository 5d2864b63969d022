"""Layer 4, running a bundled network on arrays: the model registry (one cached spec per
model), the choice of engine, onnxruntime on the CPU, torch on CUDA, and the tiling and
quantisation both share."""
