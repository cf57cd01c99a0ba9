"""Safe decoding of untrusted image bytes: verify, bound, normalise (PIL + numpy only)."""

import hashlib
import io
import re
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

WHITE = (255, 255, 255)
UPRIGHT = {  # EXIF orientation -> the transpose that shows the picture upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}
# The only decoders untrusted bytes reach (Pillow's names; MPO photos open as JPEG).
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


class ImageRejected(ValueError):
    """The bytes are not an image this app accepts; str(exc) says why, for a person."""


class PixelBudget:
    """The pixels one request may decode in all, shared by its images (thread-safe).

    Each image takes the pixels its decoder allocates (after JPEG draft scaling), before
    decoding; an image that would go past the total is refused and takes nothing.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total
        self._lock = threading.Lock()

    def take(self, pixels: int) -> None:
        """Count `pixels` against the budget, or raise ImageRejected saying why."""
        with self._lock:
            if pixels > self.left:
                raise ImageRejected(
                    f"too many pixels to decode in one request: this image needs "
                    f"{_megapixels(pixels)} megapixels and {_megapixels(self.left)} of the "
                    f"request's {_megapixels(self.total)} are left; send fewer or smaller images"
                )
            self.left -= pixels


@dataclass(frozen=True)
class NormalisedImage:
    data: bytes
    width: int
    height: int
    content_hash: str
    phash: str
    format: str


def normalise_image(
    data: bytes, *, max_pixels: int = 60_000_000, min_side: int = 32, max_side: int = 1024,
    budget: PixelBudget | None = None,
) -> NormalisedImage:
    """Verify untrusted bytes and return an upright RGB JPEG (quality 90) at most max_side.

    max_pixels bounds the image's header dimensions; budget, the request's decoded pixels.
    """
    image, fmt = _decode(data, max_pixels=max_pixels, draft_size=max_side, square_draft=True,
                         budget=budget)
    width, height = image.size
    if width < min_side or height < min_side:
        raise ImageRejected(
            f"image too small: {width}x{height} (minimum {min_side} px on each side)"
        )
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixels = image.tobytes()
    content_hash = hashlib.sha256(f"{image.width}x{image.height}:".encode() + pixels).hexdigest()
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return NormalisedImage(
        data=out.getvalue(),
        width=image.width,
        height=image.height,
        content_hash=content_hash,
        phash=dhash(image),
        format=fmt,
    )


def decode_rgb(
    data: bytes, *, max_pixels: int = 60_000_000, draft_size: int | None = None,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Verify untrusted bytes and return an upright RGB image (no size floor, no re-encode).

    draft_size decodes only what a resize to that short side needs: a large JPEG decodes
    at a reduced DCT scale whose short side stays at or above draft_size, and any image
    whose short side is at least twice that is box-reduced by a whole factor (keeping at
    least twice draft_size) before its colour conversion. None decodes at full size.
    """
    image, _ = _decode(data, max_pixels=max_pixels, draft_size=draft_size, square_draft=False,
                       budget=budget)
    return image


def dhash(image: Image.Image) -> str:
    """64-bit difference hash of an image as 16 hex characters.

    The grey image is box-reduced by a whole factor to at least 4x the 9x8 grid before the
    Lanczos step (a third of the CPU of Lanczos over every pixel); against the full Lanczos
    hash it moves a bear photo by 0.5 bits on average, 4 at most, within DISTANCE (5).
    """
    grey = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=4.0)
    small = np.asarray(grey, np.int16)
    bits = np.packbits(small[:, 1:] > small[:, :-1])
    return bits.tobytes().hex()


def dhash_distance(a: str, b: str) -> int:
    """Hamming distance between two dhash strings."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _megapixels(pixels: int) -> str:
    return f"{max(0, pixels) / 1e6:.3g}"


def _decode(
    data: bytes, *, max_pixels: int, draft_size: int | None, square_draft: bool,
    budget: PixelBudget | None,
) -> tuple[Image.Image, str]:
    if not data:
        raise ImageRejected("empty file")
    try:
        return _decode_unchecked(
            data, max_pixels=max_pixels, draft_size=draft_size, square_draft=square_draft,
            budget=budget,
        )
    except ImageRejected:
        raise
    except Exception as exc:  # any decoder failure on hostile bytes is a rejection, not a 500
        raise ImageRejected(f"image is truncated or corrupt ({type(exc).__name__})") from exc


def _decode_unchecked(
    data: bytes, *, max_pixels: int, draft_size: int | None, square_draft: bool,
    budget: PixelBudget | None,
) -> tuple[Image.Image, str]:
    limit = f"limit {max_pixels / 1e6:g} megapixels"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError as exc:
            raise ImageRejected("not an image in an accepted format (JPEG, PNG, GIF, WebP, "
                                "BMP or TIFF)") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1)) / 1e6:g} megapixels" if found else "too many pixels"
            raise ImageRejected(f"image too large: {size} ({limit})") from exc
    fmt = image.format or "UNKNOWN"
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(f"image too large: {width}x{height} pixels ({limit})")
    if width < 1 or height < 1:
        raise ImageRejected(f"image has no pixels: {width}x{height}")
    if draft_size and fmt in ("JPEG", "MPO"):  # DCT scaling: decode at 1/2, 1/4 or 1/8
        square = (draft_size, draft_size)
        image.draft(image.mode, square if square_draft else _short_side(width, height, draft_size))
    if budget is not None:
        budget.take(image.width * image.height)  # what load() allocates, after any draft
    try:
        image.load()
    except OSError as exc:
        raise ImageRejected("image is truncated or corrupt") from exc
    upright = UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation))
    factor = _reduce_factor(image, draft_size) if draft_size and not square_draft else 1
    if factor > 1 and image.mode in REDUCIBLE_MODES:
        image, factor = image.reduce(factor), 1  # before the colour conversion copies it
    image = _to_rgb(image)
    if factor > 1:  # modes reduce() cannot average (palette, 16-bit grey) are RGB by now
        image = image.reduce(factor)
    return (image.transpose(upright) if upright else image), fmt


def _reduce_factor(image: Image.Image, short_side: int) -> int:
    """The whole factor that keeps the short side at least twice short_side (at least 1)."""
    return max(1, min(image.size) // (2 * short_side))


def _short_side(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return (max(1, int(width * scale)), max(1, int(height * scale)))


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(image), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16/32-bit integer or float grey to 8 bits (convert('RGB') would clip to white)."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or (values.size and values.max() > 255):
        top = 65535.0
    else:
        top = 255.0
    return np.clip(np.nan_to_num(values) * (255.0 / top), 0, 255).round().astype(np.uint8)
