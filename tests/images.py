"""Small generated images for tests: each class a distinct colour, with noise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def png_bytes(label: str, seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[label], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
