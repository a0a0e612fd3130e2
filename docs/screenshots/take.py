"""Screenshots of Studio's main pages, for the README: `python docs/screenshots/take.py`.

Seeds the demo team (studio/demo.py) into a fresh installation in a temporary folder, serves it on a
loopback port, and photographs the pages in headless Chromium at 1440 px (and the endpoint on a 390 px
phone), writing docs/screenshots/*.png. Each image is reduced to a 256-colour palette, which keeps a page of
flat UI colours well under 300 KB. Needs the dev extras (playwright, pillow) and Chromium at
/usr/bin/chromium (or CHROMIUM=path).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
PASSWORD = "demo-password-1"  # noqa: S105 (a throwaway installation's demo people)
WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
MAX_BYTES = 300_000

# (file name, path, viewport, full page): the pages a newcomer asks about first.
SHOTS = [
    ("home", "/", WIDE, False),
    ("models", "/models/", WIDE, False),
    ("model-version", "/models/fraud-detector/versions/3/", WIDE, False),
    ("endpoint-details", "/endpoints/fraud-scoring/details/", WIDE, False),
    ("endpoint-consume", "/endpoints/fraud-scoring/consume/", WIDE, False),
    ("endpoint-monitoring", "/endpoints/fraud-scoring/monitoring/", WIDE, False),
    ("wizard", "/endpoints/new/", WIDE, False),
    ("team-console", "/admin/", WIDE, False),
    ("phone-endpoint", "/endpoints/fraud-scoring/details/", PHONE, False),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before answering")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered at {url} within {timeout:.0f}s")


def _shrink(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    small.save(path, optimize=True)
    return path.stat().st_size


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="studio-screenshots-"))
    env = {**os.environ, "STUDIO_HOME": str(home), "DEBUG": "False", "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    seed = f"from studio import demo; demo.seed({PASSWORD!r})"
    subprocess.run([python, "manage.py", "shell", "-v0", "-c", seed], cwd=ROOT, env=env, check=True)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(f"{base}/login/", server)
        _photograph(base)
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(home, ignore_errors=True)


def _photograph(base: str) -> None:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport=WIDE)
            page.goto(f"{base}/login/")
            page.fill("#id_username", "ada")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            for name, path, viewport, full_page in SHOTS:
                page.set_viewport_size(viewport)
                page.goto(f"{base}{path}")
                page.wait_for_load_state("networkidle")
                target = OUT / f"{name}.png"
                page.screenshot(path=str(target), full_page=full_page)
                size = _shrink(target)
                print(f"{target.relative_to(ROOT)}: {size // 1024} KB")
                if size > MAX_BYTES:
                    raise SystemExit(
                        f"{target.name} is {size} bytes, over {MAX_BYTES}: photograph less of the page"
                    )
        finally:
            browser.close()


if __name__ == "__main__":
    main()
