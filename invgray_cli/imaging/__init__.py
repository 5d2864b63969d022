"""Layer 2, pixels and image files: the BT.601 luma and its gray JPEG or PNG, reading
photos and writing restored ones, a JPEG input's own luma, and quality metrics."""
