"""Bundled invgray weights (installed as the ``invgray_models`` package); see MODEL_CARD.md."""
