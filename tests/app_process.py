"""Start `python app.py` in a child process on a free port with its own store, for the app and browser tests.

    with running_app(tmp_path) as app:
        Client(app.url).predict(..., api_name="/analyze")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Local accounts every app test signs in with.
USERS = {"alice": ("alice-pw", "labeler"), "rita": ("rita-pw", "reviewer"), "vic": ("vic-pw", "viewer")}
# Importing torch, transformers and gradio on two busy cores takes a while; the first page needs them all.
START_TIMEOUT_S = 180.0


@dataclass
class AppProcess:
    url: str
    db_path: Path
    media_dir: Path
    examples_dir: Path
    log_path: Path
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the app did not start in {START_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-4000:]}")


@contextlib.contextmanager
def running_app(root: Path, extra_env: dict[str, str] | None = None):
    """The app on a free port, its store under `root`; stopped (SIGINT, then SIGKILL) on exit."""
    port = free_port()
    env = dict(os.environ)
    env.update({
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "SLUDGELENS_DB": str(root / "store.db"),
        "SLUDGELENS_MEDIA": str(root / "media"),
        "SLUDGELENS_EXPORTS": str(root / "exports"),
        "SLUDGELENS_USERS": ",".join(f"{n}:{pw}:{role}" for n, (pw, role) in USERS.items()),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("SLUDGELENS_DEV_USER", None)
    env.pop("SPACE_ID", None)
    env.pop("SLUDGELENS_EXAMPLES", None)
    env.update(extra_env or {})
    log_path = root / "app.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    # The example clips are the committed ones of the repository (the app's default examples folder).
    app = AppProcess(url=f"http://127.0.0.1:{port}/", db_path=root / "store.db", media_dir=root / "media",
                     examples_dir=REPO / "examples", log_path=log_path, process=process)
    try:
        _wait_until_up(app.url, process, log_path)
        yield app
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
