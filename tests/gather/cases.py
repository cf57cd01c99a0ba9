"""The URL list the gathering tests search: good photos and every kind of bad answer."""

GOOD = [f"/photo/bears/black/{i:04d}.jpg" for i in range(10, 18)] + [
    "/redirect/2/photo/bears/grizzly/0005.jpg",
    "/slow/0.3/photo/bears/teddy/0010.jpg",
    "/slow/0.3/photo/bears/teddy/0011.jpg",
    "/photo/odd/png_named_jpg.jpg",
    "/photo/odd/cmyk.jpg",
    "/photo/odd/animated.gif",
]
DUPLICATE = ["/photo/bears/black/0010.jpg?copy=1"]
REJECTED = {
    "/photo/odd/truncated.jpg": "image is truncated or corrupt",
    "/photo/odd/one_pixel.png": "image too small",
    "/photo/odd/huge_dims_10000x10000.png": "image too large",
}
FAILED = {
    "/missing/bear.jpg": "HTTP 404",
    "/page.html": "not an image (text/html page)",
    "/slow/3/photo/bears/teddy/0012.jpg": "timed out",
    "/loop": "too many redirects",
}
SETTINGS = {"allow_loopback_downloads": True, "download_read_timeout_s": 1,
            "download_total_timeout_s": 10}


def paths() -> list[str]:
    """Every path, bad ones spread among the good ones."""
    bad = DUPLICATE + list(REJECTED) + list(FAILED)
    good = list(GOOD)
    out = []
    while good or bad:
        out += good[:2] + bad[:1]
        good, bad = good[2:], bad[1:]
    return out


def expected_reasons() -> dict[str, int]:
    reasons = {}
    for reason in [*REJECTED.values(), *FAILED.values()]:
        reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def hits(base: str):
    from app.services.search import Hit

    return [Hit(image_url=base + path, page_url=f"https://pages.example/{i}",
                title=f"a bear <b>{i}</b>") for i, path in enumerate(paths())]
