"""The course site of the SMOKE run in a real browser: every notebook run under papermill (the session's `notebooks`
fixture, shared with the notebook tests), the site built from that run folder and every page opened in headless
Chromium (tests/browser.py) as a learner opens index.html. Each page has a title, each notebook page shows the
figures its notebook drew, the navigation leads to pages that exist, and the console logs nothing SEVERE (nothing
fetched from the network, no script error). Screenshots of the index and of notebook 02 go to RUN_DIR/browser/."""

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import headless_chromium  # first: skips this module where Chromium is not installed
from selenium.webdriver.common.by import By

from refrag_lib.course.notebooks import notebook_paths
from refrag_lib.course.site import build_site

pytestmark = [pytest.mark.browser, pytest.mark.notebooks]

PAGE_TIMEOUT = 60  # s: a page is one file, its figures inside it
PLOTTING = ("02_reconstruction", "06_ttft_benchmark")  # notebooks that draw figures in every run
SCREENSHOTS = ("index", "02_reconstruction")


@pytest.fixture(scope="module")
def site(notebooks) -> list[Path]:
    notebooks.run(notebook_paths()[-1].stem)  # every notebook, in order (each runs once per session)
    return build_site(notebooks.root, notebooks.root / "site")


@pytest.fixture(scope="module")
def browser(notebooks):
    (notebooks.root / "browser").mkdir(exist_ok=True)
    driver = headless_chromium(notebooks.root / "browser" / "site-profile", PAGE_TIMEOUT)
    yield driver
    driver.quit()


def drawn(executed: dict) -> int:
    """How many figures an executed notebook holds: its image outputs."""
    return sum(mime.startswith("image/") for cell in executed["cells"] for output in cell.get("outputs", [])
               for mime in output.get("data", {}))


def test_every_page_loads_with_its_title_figures_and_navigation(site, browser, notebooks):
    assert all(drawn(notebooks.done[stem]) for stem in PLOTTING), "a plotting notebook drew no figure"
    for page in site:
        browser.get(page.as_uri())
        assert browser.title.strip(), f"{page.name} has no title"
        nav = [Path(unquote(urlparse(link.get_attribute("href")).path))
               for link in browser.find_elements(By.CSS_SELECTOR, ".site-nav a")]
        assert nav == site and all(path.is_file() for path in nav), page.name
        if page.stem in notebooks.done:
            figures = browser.find_elements(By.CSS_SELECTOR, "img[src^='data:image/']")
            assert len(figures) >= drawn(notebooks.done[page.stem]), page.name  # an HTML output may add its own
            shown = "return arguments[0].complete && arguments[0].naturalWidth > 0"
            assert all(browser.execute_script(shown, figure) for figure in figures), f"{page.name}: a broken figure"
        if page.stem in SCREENSHOTS:
            browser.save_screenshot(str(notebooks.root / "browser" / f"site_{page.stem}.png"))
        assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == [], page.name
