"""The playground in a real browser: `make playground`'s Voilà page, and notebook 07 in JupyterLab, each
opened in headless Chromium (tests/browser.py). A learner's clicks: type a question, press Ask, read the answer
rows, the coloured chunks and the TTFT; an empty question and p = 2 show the playground's message; the page logs no
JavaScript error. A screenshot of every state goes to RUN_DIR/browser/. Servers are stopped when the tests end."""

import os
import secrets
import signal
import subprocess
import sys

import pytest
from browser import headless_chromium  # first: skips this module where Chromium is not installed
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from refrag_lib.course.playground_page import HOST, prepare_page, voila_command, wait_for_port
from refrag_lib.runs import open_run

pytestmark = [pytest.mark.browser, pytest.mark.notebooks]

# s: the kernel starts, loads the SMOKE models and answers the notebook's first question
PAGE_TIMEOUT = 240
ANSWER_TIMEOUT = 120


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start(command: list[str], port: int, log_path, env: dict | None = None) -> subprocess.Popen:
    """A server in its own process group (so stopping it stops its kernels too), listening before we go on."""
    log = open(log_path, "w")  # closed with the process, in stop()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **(env or {})})
    process.log = log
    wait_for_port(port, process, timeout=90)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    process.log.close()


@pytest.fixture(scope="module")
def course(notebooks):
    notebooks.run("07_playground")  # the SMOKE course run, notebook 05's readers included
    run = open_run("cpu", notebooks.root)
    (run.root / "browser").mkdir(exist_ok=True)
    return run


@pytest.fixture(scope="module")
def browser(course):
    driver = headless_chromium(course.root / "browser" / "profile", PAGE_TIMEOUT)
    yield driver
    driver.quit()


def javascript_errors(driver) -> list[str]:
    """SEVERE entries of the page's console that come from its scripts (not a missing favicon)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and entry.get("source") in ("javascript", "console-api")]


def ask(driver, shots, name: str, question: str | None = None, p: str | None = None) -> str:
    """Fill the form (question text, p), press Ask, wait for a new answer; returns the answer's text."""
    form = driver.find_element(By.CSS_SELECTOR, ".playground-form")
    if question is not None:
        box = form.find_element(By.CSS_SELECTOR, ".widget-text input[type='text']")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(question)
    if p is not None:
        number = form.find_element(By.CSS_SELECTOR, ".widget-text input[type='number']")
        number.send_keys(Keys.CONTROL, "a")
        number.send_keys(p, Keys.TAB)  # FloatText sends its value on blur
    answer = form.find_element(By.CSS_SELECTOR, ".playground-answer")
    before = answer.get_attribute("innerHTML")
    form.find_element(By.XPATH, ".//button[normalize-space()='Ask']").click()
    WebDriverWait(driver, ANSWER_TIMEOUT).until(
        lambda d: answer.get_attribute("innerHTML") not in (before, "<p>thinking...</p>")
        and "thinking" not in answer.text)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", form)  # the form and its answer
    driver.save_screenshot(str(shots / f"{name}.png"))
    return answer.get_attribute("innerHTML")


def check_the_form(driver, shots, prefix: str) -> None:
    WebDriverWait(driver, PAGE_TIMEOUT).until(seen.presence_of_element_located((By.CSS_SELECTOR, ".playground-answer")))
    driver.save_screenshot(str(shots / f"{prefix}_loaded.png"))
    html = ask(driver, shots, f"{prefix}_answer", question="Where is Institute_131 located?")
    assert "RAG (tokens)" in html and "REFRAG k=16" in html  # both answer rows
    assert "#c8f0c8" in html.replace("rgb(200, 240, 200)", "#c8f0c8")  # expanded chunks coloured
    assert " ms</td>" in html and "x sooner" in html  # the TTFT of each reader
    assert "Cannot answer yet" not in html and "Something went wrong" not in html
    empty = ask(driver, shots, f"{prefix}_empty_question", question=" ")
    assert "Cannot answer yet" in empty and "question is empty" in empty
    wrong_p = ask(driver, shots, f"{prefix}_p_is_2", question="Where is Institute_131 located?", p="2")
    assert "Cannot answer yet" in wrong_p and "[0, 1]" in wrong_p
    assert javascript_errors(driver) == []


def test_the_voila_page_answers_and_explains_bad_input(course, browser):
    shots, port = course.root / "browser", free_port()
    page = prepare_page(course)
    server = start(voila_command(page, port), port, shots / "voila.log")
    try:
        browser.get(f"http://{HOST}:{port}/")
        check_the_form(browser, shots, "voila")
        assert "import" not in browser.find_element(By.TAG_NAME, "body").text  # no code cells on the page
    finally:
        stop(server)


def test_notebook_07_in_jupyterlab_answers_and_explains_bad_input(course, browser, tmp_path):
    shots, port, token = course.root / "browser", free_port(), secrets.token_hex(16)
    page = prepare_page(course)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip={HOST}",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
               f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={page.parent}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
               f"--LabApp.user_settings_dir={tmp_path / 'settings'}"]
    env = {"JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = start(command, port, shots / "jupyterlab.log", env)
    try:
        browser.get(f"http://{HOST}:{port}/lab/tree/{page.name}?token={token}")
        wait = WebDriverWait(browser, PAGE_TIMEOUT)
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        wait.until(seen.presence_of_element_located(
            (By.XPATH, "//*[contains(@class,'jp-Notebook-ExecutionIndicator') and @data-status='idle']")))
        browser.save_screenshot(str(shots / "jupyterlab_opened.png"))
        menu = "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']"
        wait.until(seen.element_to_be_clickable((By.XPATH, menu))).click()
        wait.until(seen.element_to_be_clickable((By.XPATH, "//li[@data-command='runmenu:run-all']"))).click()
        check_the_form(browser, shots, "jupyterlab")
    finally:
        stop(server)
