"""docs/figures/demo.png: `selfvae demo RUN` in headless Chromium after uploading IMAGE (Debian's chromium and
chromium-driver, selenium).

    python tools/demo_screenshot.py RUN IMAGE [-o docs/figures/demo.png] [--tab samples]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("image")
    ap.add_argument("-o", "--output", default="docs/figures/demo.png")
    ap.add_argument("--height", type=int, default=1250)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "selfvae.cli", "demo", args.run, "--port", str(port)])
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--window-size=1200,{args.height}"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(url)
            for _ in range(60):
                inputs = driver.find_elements(By.CSS_SELECTOR, "#upload input[type=file]")
                if inputs:
                    break
                time.sleep(0.5)
            inputs[0].send_keys(args.image)
            for _ in range(120):
                if driver.find_elements(By.CSS_SELECTOR, "#modes img"):
                    break
                time.sleep(0.5)
            time.sleep(1)
            driver.save_screenshot(args.output)
        finally:
            driver.quit()
    finally:
        server.terminate()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
