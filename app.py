"""sludgelens: settings -> services -> ui.build_demo(services) -> launch."""

from __future__ import annotations

import logging
import os
import signal
import sys

from core.config import load_settings
from ui import build_demo, launch_options
from ui.layout import log_refusals
from ui.services import build_services


def main() -> None:
    # One line per event worth a look (a refused upload, the model the app fell back to); gradio's own
    # request logging stays at its default.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # A Space stops the app with SIGTERM: exit normally, so the store's last snapshot is taken (atexit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = load_settings()
    services = build_services(settings)
    demo = log_refusals(build_demo(services))
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", "7860"))),
        **launch_options(services),
    )


if __name__ == "__main__":
    main()
