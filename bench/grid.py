"""Grid first paint: 2,000 images of one project in headless Chromium.

Kodiak's grid (server-rendered tiles, lazy `?size=` thumbnails cached in storage) against a
naive baseline in the same run: the same tiles pointing at the full-size stored images, loaded
eagerly. Prints the figures and writes bench/results/grid.json.
"""

import io
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from common import RESULTS, bear_photos
from PIL import Image as PILImage

from app.cli import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.models import User
from app.services import datasets, projects
from app.storage import open_storage
from app.web.main import create_app

IMAGES = 2000
RUNS = 5
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
PAINT = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  return {fcp: fcp ? fcp.startTime : null, dom: nav.domContentLoadedEventEnd,
          load: nav.loadEventEnd, tiles: document.querySelectorAll('.tile').length};
}"""


def variants(count: int):
    """Distinct JPEGs made from the bear photos: crops, flips and re-encodings."""
    paths = bear_photos()
    n = 0
    while n < count:
        for path in paths:
            if n >= count:
                return
            k = n // len(paths)
            with PILImage.open(path) as source:
                picture = source.convert("RGB")
            picture.thumbnail((480, 480))
            w, h = picture.size
            dx, dy = (k * 7) % max(1, w // 8), (k * 11) % max(1, h // 8)
            picture = picture.crop((dx, dy, w - (k % 3) * 5, h - (k % 2) * 5))
            if k % 2:
                picture = picture.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
            out = io.BytesIO()
            picture.save(out, "JPEG", quality=80 + k % 10)
            yield path.parent.name, f"{n}.jpg", out.getvalue()
            n += 1


def populate(settings: Settings) -> int:
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    storage = open_storage(settings.resolved_storage_url(), settings)
    limits = datasets.Limits(max_pixels=60_000_000, max_zip_members=10, max_zip_bytes=2**20)
    with factory() as session:
        owner = session.query(User).first()
        project = projects.create_project(session=session, owner=owner, name="Bears 2000",
                                          labels=["black", "grizzly", "teddy"])
        batch = []
        for label, name, data in variants(IMAGES):
            batch.append(datasets.Upload(filename=name, data=data, label=label))
            if len(batch) == 100:
                datasets.add_images(session=session, storage=storage, project=project,
                                    uploads=batch, limits=limits)
                batch = []
        if batch:
            datasets.add_images(session=session, storage=storage, project=project,
                                uploads=batch, limits=limits)
        session.commit()
        return project.id


def main() -> None:
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="kodiak-grid-"))
    settings = Settings(home=home, admin_email="admin@example.com",
                        admin_password="admin-password-1", broker_url="memory://")
    migrate(settings)
    started = time.perf_counter()
    project_id = populate(settings)
    print(f"made {IMAGES} images in {time.perf_counter() - started:.0f} s")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=8931,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = "http://127.0.0.1:8931"
    while True:
        try:
            httpx.get(f"{base}/api/v1/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    grid = f"{base}/projects/{project_id}/images?status=&per={IMAGES}"
    figures: dict[str, list[dict]] = {"kodiak_cold": [], "kodiak": [], "baseline": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{base}/login")
        page.fill("#email", "admin@example.com")
        page.fill("#password", "admin-password-1")
        page.click("button[type=submit]")
        page.wait_for_url("**/projects")

        def measure(url: str, *, baseline: bool) -> dict:
            page.goto("about:blank")
            if baseline:  # the same page, every tile pointing at its full-size image, eager
                def naive(route):
                    response = route.fetch()
                    route.fulfill(response=response, body=response.text().replace(
                        'loading="lazy"', "").replace("/thumb?size=160", "/file"))

                page.route(url, naive)
            page.goto(url, wait_until="load", timeout=300_000)
            if baseline:
                page.unroute(url)
            result = page.evaluate(PAINT)
            assert result["tiles"] >= 0.99 * IMAGES, result  # a few bear photos are twins
            return result

        for run in range(RUNS):
            if run == 0:
                figures["kodiak_cold"].append(measure(grid, baseline=False))
            figures["kodiak"].append(measure(grid, baseline=False))
            figures["baseline"].append(measure(grid, baseline=True))
        browser.close()
    server.should_exit = True

    def median(key: str, field: str) -> float:
        return round(statistics.median(r[field] for r in figures[key]), 1)

    kodiak_fcp, base_fcp = median("kodiak", "fcp"), median("baseline", "fcp")
    result = {
        "images": figures["kodiak"][0]["tiles"],
        "runs": RUNS,
        "kodiak_first_paint_ms": kodiak_fcp,
        "kodiak_first_paint_cold_thumbs_ms": median("kodiak_cold", "fcp"),
        "kodiak_load_ms": median("kodiak", "load"),
        "baseline_first_paint_ms": base_fcp,
        "baseline_load_ms": median("baseline", "load"),
        "ratio": round(base_fcp / kodiak_fcp, 2) if kodiak_fcp else None,
        "load_ratio": round(median("baseline", "load") / median("kodiak", "load"), 2),
        "goal_first_paint_ms": 1000,
        "baseline": "same grid with eager full-size images (no thumbnails, no lazy loading)",
        "page": "one page of all 2,000 tiles (?per=2000); the default page holds 200",
        "machine": f"{platform.processor() or platform.machine()}, 2 cores, "
                   f"{platform.system()} {platform.release()}, headless Chromium (Debian)",
        "raw": figures,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))
    (RESULTS / "grid.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
