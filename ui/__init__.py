"""The Gradio front end. Each callback is one call into core/ or annotations/ plus formatting."""

from ui.layout import TABS, build_demo, launch_options

__all__ = ["TABS", "build_demo", "launch_options"]
