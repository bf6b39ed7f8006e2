"""sludgelens: settings -> services -> ui.build_demo(services) -> launch."""

from __future__ import annotations

import os
import signal
import sys

from core.config import load_settings
from ui import build_demo, launch_options
from ui.services import build_services


def main() -> None:
    # A Space stops the app with SIGTERM: exit normally, so the store's last snapshot is taken (atexit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = load_settings()
    services = build_services(settings)
    demo = build_demo(services)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", "7860"))),
        **launch_options(services),
    )


if __name__ == "__main__":
    main()
