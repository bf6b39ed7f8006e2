"""The Gradio front end. Each callback is one call into core/ or annotations/ plus formatting."""

from ui.layout import build_demo

__all__ = ["build_demo"]
