"""Decode untrusted image bytes into an RGB ``PIL.Image`` safely.

- Only common photo formats are tried (JPEG/MPO, PNG, GIF, WebP, BMP, TIFF, AVIF), so
  exotic decoders (EPS runs Ghostscript) never see untrusted input.
- The pixel cap is checked on the header's size before any pixel is decoded. Pillow's own
  guard (a warning past ``Image.MAX_IMAGE_PIXELS``, an error past twice that) is left as
  the application set it and mapped to ``ImageTooLarge`` when it fires, so the effective
  cap is ``min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)``.
- Truncated or corrupt data fails ``load()`` → ``ImageInvalid``
  (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched).
- Transparent pixels are composited on white: the colour under alpha 0 is arbitrary
  (often black), and white is how the image shows on a typical page.
- Animated GIF/WebP/PNG give their first frame.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps

from core.errors import ImageInvalid, ImageTooLarge, VerifierError

WANTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# What Pillow's decoders raise on malformed input (its fuzzers allow the same set).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError, ZeroDivisionError)


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An RGB image and the original dimensions after EXIF orientation."""

    image: Image.Image  # may be smaller than width x height when decoded in draft mode
    width: int
    height: int


def decode_image(data: bytes, *, max_pixels: int, target_size: int | None = None) -> DecodedImage:
    """Decode ``data`` to RGB, refusing non-images and images over ``max_pixels``.

    With ``target_size``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8)
    that keeps both sides at least ``target_size``.
    """
    if not data:
        raise ImageInvalid("the object is empty")
    try:
        with Image.open(io.BytesIO(data), formats=_formats()) as img:
            return _decode(img, max_pixels=max_pixels, target_size=target_size)
    except VerifierError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image is over the pixel cap: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageInvalid(f"not an image in a supported format ({', '.join(_formats())})") from None
    except MemoryError:
        raise ImageTooLarge("the image needs more memory than is available to decode") from None
    except _DECODE_ERRORS as exc:
        raise ImageInvalid(f"the image is truncated or corrupt: {exc}") from None


def _decode(img: ImageFile.ImageFile, *, max_pixels: int, target_size: int | None) -> DecodedImage:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} pixels; the cap is {max_pixels}")
    orientation = _orientation(img)
    if target_size and img.format in ("JPEG", "MPO"):
        img.draft("RGB", (target_size, target_size))
    img.load()
    try:
        # Always a new image (a copy when upright), so it outlives the closed file.
        upright = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS:  # a broken EXIF block should not cost a decodable photo
        upright, orientation = img.copy(), 1
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return DecodedImage(image=to_rgb(upright), width=width, height=height)


def to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` as 8-bit RGB, compositing transparency on white and scaling deep modes."""
    if img.mode == "RGB":
        return img
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit samples: keep the top 8 bits rather than clip everything over 255 to white.
        # Mode I (32-bit) carries no depth, so it is read as 16-bit only when it goes past 255.
        deep = img.mode != "I" or (img.getextrema()[1] or 0) > 255  # type: ignore[operator]
        img = img.convert("I")
        if deep:
            img = img.point(lambda v: v / 256)
        img = img.convert("L")
    elif img.mode == "F":
        if (img.getextrema()[1] or 0) <= 1.0:  # type: ignore[operator]
            img = img.point(lambda v: v * 255)
        img = img.convert("L")
    return img.convert("RGB")


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


@functools.cache
def _formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin; done on first use, not at import
    return tuple(f for f in WANTED_FORMATS if f in Image.OPEN)
