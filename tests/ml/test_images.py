import csv
import io
import random
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from app.ml.images import (
    ImageRejected,
    PixelBudget,
    decode_rgb,
    dhash_distance,
    normalise_image,
)

REJECTED = {"truncated.jpg", "empty.jpg", "not_an_image.jpg", "html_error_page.jpg",
            "one_pixel.jpg", "one_pixel.png", "extreme_aspect_2000x12.jpg",
            "huge_dims_100000x100000.png", "huge_dims_65000x65000.jpg",
            "huge_dims_10000x10000.png"}


def odd_files(data_dir):
    with open(data_dir / "odd" / "manifest.csv", newline="") as f:
        return [row["file"] for row in csv.DictReader(f)]


def test_every_odd_file_is_handled_per_manifest(data_dir):
    names = odd_files(data_dir)
    assert len(names) >= 25
    for name in names:
        data = (data_dir / "odd" / name).read_bytes()
        if name in REJECTED:
            with pytest.raises(ImageRejected) as info:
                normalise_image(data)
            assert str(info.value), name
            continue
        result = normalise_image(data)
        with Image.open(io.BytesIO(result.data)) as out:
            assert (out.format, out.mode) == ("JPEG", "RGB"), name
            assert out.size == (result.width, result.height)
        assert max(result.width, result.height) <= 1024
        assert len(result.phash) == 16 and len(result.content_hash) == 64


def test_reasons_are_readable(data_dir):
    odd = data_dir / "odd"
    cases = {
        "empty.jpg": "empty file",
        "not_an_image.jpg": "not an image",
        "truncated.jpg": "truncated or corrupt",
        "one_pixel.png": "image too small: 1x1",
        "huge_dims_10000x10000.png": "image too large",
        "huge_dims_100000x100000.png": "image too large",
    }
    for name, reason in cases.items():
        with pytest.raises(ImageRejected, match=reason):
            normalise_image((odd / name).read_bytes())


def test_huge_dimensions_are_rejected_before_decoding(data_dir):
    for name in ("huge_dims_100000x100000.png", "huge_dims_65000x65000.jpg",
                 "huge_dims_10000x10000.png"):
        data = (data_dir / "odd" / name).read_bytes()
        tick = time.perf_counter()
        with pytest.raises(ImageRejected, match="too large"):
            decode_rgb(data)
        assert time.perf_counter() - tick < 0.5


def test_exif_rotation_comes_out_upright(data_dir):
    result = normalise_image((data_dir / "odd" / "exif_rotate6.jpg").read_bytes())
    assert (result.width, result.height) == (320, 214)
    plain = normalise_image((data_dir / "odd" / "progressive.jpg").read_bytes())
    assert dhash_distance(result.phash, plain.phash) <= 6


def test_gray16_is_scaled_not_clipped_to_white(data_dir):
    image = decode_rgb((data_dir / "odd" / "gray16.png").read_bytes())
    pixels = np.asarray(image)
    assert image.mode == "RGB" and 60 < pixels.mean() < 200 and pixels.std() > 20


def test_transparency_is_flattened_onto_white(data_dir):
    image = decode_rgb((data_dir / "odd" / "alpha_rgba.png").read_bytes())
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_large_camera_jpeg_is_accepted_and_fast(data_dir):
    data = (data_dir / "odd" / "large_7487x4991.jpg").read_bytes()
    tick = time.perf_counter()
    result = normalise_image(data)
    assert time.perf_counter() - tick < 2.0
    assert (result.width, result.height) == (1024, 683)
    assert min(decode_rgb(data, draft_size=256).size) >= 256


def test_same_picture_hashes_the_same_and_near_copies_are_close(data_dir):
    odd = data_dir / "odd"
    a = normalise_image((odd / "real.webp").read_bytes())
    b = normalise_image((odd / "webp_named_jpg.jpg").read_bytes())
    assert a.content_hash == b.content_hash and a.format == "WEBP"
    jpeg = normalise_image((odd / "trailing_garbage.jpg").read_bytes())
    assert dhash_distance(a.phash, jpeg.phash) <= 6
    cat = normalise_image((data_dir / "ood" / "cat.jpg").read_bytes())
    assert dhash_distance(a.phash, cat.phash) > 12


def test_random_and_mangled_bytes_only_ever_raise_image_rejected(data_dir):
    rng = random.Random(0)
    seed = (data_dir / "bears" / "grizzly" / "0001.jpg").read_bytes()
    blobs = [rng.randbytes(rng.randint(1, 4000)) for _ in range(50)]
    for _ in range(50):
        mangled = bytearray(seed)
        for _ in range(rng.randint(1, 20)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        blobs.append(bytes(mangled[: rng.randint(10, len(mangled))]))
    for blob in blobs:
        try:
            normalise_image(blob)
            decode_rgb(blob)
        except ImageRejected:
            pass


def flat_png(width: int, height: int, rgb=(200, 120, 40)) -> bytes:
    """An RGB PNG of one flat colour, a few hundred KB however many pixels it has.

    Built row block by row block (after a full flush, deflate repeats itself byte for
    byte), so a 64-megapixel PNG takes a fraction of a second and no 192 MB buffer.
    """
    row = b"\x00" + bytes(rgb) * width
    rows_per_block = max(1, 2**20 // len(row))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = deflate.compress(row * rows_per_block) + deflate.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(height, rows_per_block)
    tail = deflate.compress(row * rest) + deflate.flush()
    checksum = 1
    for _ in range(height):
        checksum = zlib.adler32(row, checksum)
    idat = b"\x78\xda" + block * blocks + tail + struct.pack(">I", checksum)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def test_flat_png_is_a_real_png():
    data = flat_png(300, 200)
    image = decode_rgb(data)
    assert image.size == (300, 200) and image.getpixel((299, 199)) == (200, 120, 40)


def test_pixel_budget_counts_and_refuses_without_taking():
    budget = PixelBudget(1000)
    budget.take(600)
    with pytest.raises(ImageRejected, match="too many pixels to decode in one request"):
        budget.take(401)
    budget.take(400)
    assert budget.left == 0


def test_a_flat_64_megapixel_png_is_refused_by_the_budget_before_decoding():
    data = flat_png(8000, 8000)
    assert len(data) < 1_000_000
    budget = PixelBudget(25_000_000)
    tick = time.perf_counter()
    with pytest.raises(ImageRejected, match="needs 64 megapixels"):
        decode_rgb(data, max_pixels=100_000_000, draft_size=256, budget=budget)
    assert time.perf_counter() - tick < 0.5  # refused from the header, never inflated
    assert budget.left == 25_000_000


def test_a_large_jpeg_takes_only_its_draft_pixels():
    data = encoded(Image.new("RGB", (8000, 6000), (40, 90, 160)), "JPEG", quality=70)
    budget = PixelBudget(1_000_000)  # far below the 48 megapixels of a full decode
    image = decode_rgb(data, draft_size=256, budget=budget)
    assert image.size == (1000, 750)  # DCT-scaled to 1/8 while decoding
    assert budget.total - budget.left == 1000 * 750


def test_other_formats_are_reduced_before_the_resize_and_stay_upright():
    image = Image.linear_gradient("L").resize((2400, 1200)).convert("RGB")
    png = decode_rgb(encoded(image, "PNG", compress_level=1), draft_size=256)
    assert png.size == (1200, 600)  # short side kept at least twice the draft size
    palette = decode_rgb(encoded(image.convert("P"), "PNG", compress_level=1), draft_size=256)
    assert palette.size == (1200, 600) and palette.mode == "RGB"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown upright it is portrait
    rotated = decode_rgb(encoded(image, "PNG", compress_level=1, exif=exif), draft_size=256)
    assert rotated.size == (600, 1200)
    assert decode_rgb(encoded(image, "PNG", compress_level=1)).size == (2400, 1200)


def _full_lanczos_dhash(image: Image.Image) -> str:
    """The dHash as stored before the reduced step: Lanczos over every pixel."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), np.int16)
    return f"{int(''.join('1' if b else '0' for b in (small[:, 1:] > small[:, :-1]).flat), 2):016x}"


def test_dhash_stays_within_near_duplicate_distance_of_stored_hashes(data_dir):
    """Hashes stored by the full-Lanczos dHash still match new hashes of the same photos and
    of their smaller recompressed copies (the near-duplicate distance is 5 bits)."""
    from app.ml.images import dhash
    from app.ml.near_duplicates import DISTANCE

    photos = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:60]
    assert len(photos) == 60
    same, copies = [], []
    for path in photos:
        image = Image.open(path).convert("RGB")
        stored = _full_lanczos_dhash(image)
        small = image.resize((image.width * 3 // 5, image.height * 3 // 5))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=75)
        same.append(dhash_distance(stored, dhash(image)))
        copies.append(dhash_distance(stored, normalise_image(out.getvalue()).phash))
    assert max(same) <= DISTANCE - 1 and max(copies) <= DISTANCE
    assert sum(same) / len(same) < 1.5
