"""Decoding untrusted image bytes safely and cheaply."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse decompression bombs outright instead of only warning about them.
MAX_PIXELS = 64_000_000

# Formats a photo or a scan arrives in. Pillow's other readers are never tried on untrusted bytes:
# EPS hands the file to Ghostscript, and the rare ones (FITS, SPIDER, ...) see little use.
# (MPO, a camera's multi-picture JPEG, is read by the JPEG reader.)
Image.init()
FORMATS = tuple(f for f in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "ICO", "AVIF",
                            "JPEG2000") if f in Image.OPEN)


class BadImage(ValueError):
    """The bytes are not an image this backend can use."""


def decode_image(data: bytes, target: int = 224) -> Image.Image:
    """Decode to RGB as people see the image: upright by its EXIF orientation, the first frame
    of an animation, 16-bit and float images scaled to 8 bits, CMYK and palettes converted.
    JPEGs much larger than `target` are decoded at reduced size (draft mode)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            if img.width * img.height > MAX_PIXELS:
                raise BadImage(f"image too large: {img.width}x{img.height} pixels")
            if img.format == "JPEG":
                img.draft("RGB", (target * 2, target * 2))
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("image too large: its header claims more pixels than allowed") from None
    except UnidentifiedImageError:  # its message names an in-memory buffer: no use to anyone
        raise BadImage("cannot decode image: not a format this backend reads") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt data
        raise BadImage(f"cannot decode image: {str(exc)[:200]}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Pillow's own conversion clips 16-bit and float pixels to 255 (a white image)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" and pixels.max(initial=0) <= 1.0 else 65535.0
        if img.mode != "F" and pixels.max(initial=0) <= 255:
            top = 255.0
        img = Image.fromarray(np.clip(pixels / top * 255, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


# Files taken for images by suffix (import-images, predict, simulate).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
