"""Layer 1, the file formats: the residual container, format 1's packing, format 2's
entropy coder, the residual embedded in a gray image, and file signatures. numpy,
zstandard and constriction only; nothing else of invgray."""
