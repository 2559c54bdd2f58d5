"""Headless Chromium for the browser tests: Debian's chromium and chromium-driver, driven by Selenium (no browser is
downloaded). Importing this module skips the test module that imports it where Chromium is not installed."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("headless Chromium is not installed: `apt-get install chromium chromium-driver` (Debian/Ubuntu; "
                ".ci/run does it)", allow_module_level=True)

from selenium import webdriver  # imported once Chromium is known to be there
from selenium.webdriver.chrome.service import Service


def headless_chromium(profile: Path, page_timeout: int) -> webdriver.Chrome:
    """Chromium without a window, in a profile of its own, keeping its console log (driver.get_log("browser"))."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # the machine's network is closed: without these, Chromium keeps trying to reach Google's services
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(page_timeout)
    return driver
