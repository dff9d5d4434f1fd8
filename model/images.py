"""Decoding untrusted image bytes safely and cheaply."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

# Refuse decompression bombs outright instead of only warning about them.
MAX_PIXELS = 64_000_000


class BadImage(ValueError):
    """The bytes are not an image this backend can use."""


def decode_image(data: bytes, target: int = 224) -> Image.Image:
    """Decode to RGB; JPEGs much larger than `target` are decoded at reduced size (draft mode)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise BadImage(f"image too large: {img.width}x{img.height} pixels")
            if img.format == "JPEG":
                img.draft("RGB", (target * 2, target * 2))
            img.load()
            return img.convert("RGB")
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"image too large: {exc}") from None
    except UnidentifiedImageError:  # its message names an in-memory buffer: no use to anyone
        raise BadImage("cannot decode image: not a format Pillow reads") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt data
        raise BadImage(f"cannot decode image: {exc}") from None


# Files taken for images by suffix (import-images, predict, simulate).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
