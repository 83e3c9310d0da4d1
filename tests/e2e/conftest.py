"""A real `streamlit run server.py` server (app.py as an st.App) on a free port, and a
headless Chromium driven by Playwright (Debian's /usr/bin/chromium; Playwright's own
browser download is not used).

The server gets a fresh LAYERLAB_CACHE_DIR (the converted models are symlinked in) and
is always killed at the end, also when a test fails. `model_free_url` is a second server
on which no model may be loaded.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_SECONDS = 120


class ServerURL(str):
    """The server's URL; `.pid` is its process (group leader), `.log` its log file."""

    pid: int
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(tmp_path_factory, **env):
    """Run `streamlit run server.py` with a fresh cache (models symlinked in) and `env` on a
    free port; yield its URL, and kill it at the end, also when a test fails."""
    cache = tmp_path_factory.mktemp("e2e") / "cache"
    cache.mkdir()
    if (ROOT / "cache" / "models").exists():
        os.symlink(ROOT / "cache" / "models", cache / "models")
    port = free_port()
    log = open(cache.parent / "streamlit.log", "w")
    env = dict(os.environ, LAYERLAB_CACHE_DIR=str(cache), **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "server.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start within {STARTUP_SECONDS} s; see {log.name}")
            time.sleep(0.5)
        served = ServerURL(url)
        served.pid, served.log = proc.pid, Path(log.name)
        yield served
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    yield from serve(tmp_path_factory)


@pytest.fixture(scope="session")
def model_free_url(tmp_path_factory):
    """A server whose allow-list admits no model at all: whatever works there works
    without a model."""
    yield from serve(tmp_path_factory, LAYERLAB_ALLOWED_MODELS="hub:no-such-org/*")


@pytest.fixture(scope="session")
def tiny_url(tmp_path_factory, tiny_dir):
    """A server that may open the tiny model (tests/tiny.py) from a link."""
    yield from serve(tmp_path_factory, LAYERLAB_ALLOWED_MODELS=f"default,{tiny_dir}")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
