"""Checks of a saved figure that a broken plot fails (a size > 0 check passes for a blank image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, figure_size_in: tuple[float, float], dpi: float = 100.0) -> np.ndarray:
    """``path`` is a PNG of the figure's size in pixels (``figsize`` x ``dpi``) that is not blank
    (a few percent of its pixels differ from the background); returns its pixels (H, W, channels)."""
    from matplotlib.image import imread

    assert Path(path).read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    pixels = imread(path)
    want = (round(figure_size_in[1] * dpi), round(figure_size_in[0] * dpi))
    assert pixels.shape[:2] == want, (pixels.shape, want)
    rgb = pixels[..., :3].reshape(-1, 3)
    background = rgb[0]
    drawn = float(np.mean(np.any(np.abs(rgb - background) > 0.05, axis=1)))
    assert drawn > 0.02, f"{path}: only {drawn:.1%} of the pixels are drawn"
    return pixels
