"""The objects the UI calls into, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import Settings
from core.registry import ModelRegistry


@dataclass
class Services:
    settings: Settings
    models: ModelRegistry


def build_services(settings: Settings) -> Services:
    """Wire the registry (and, later, the store) for the UI. Loads nothing yet: models load on first use."""
    return Services(settings=settings, models=ModelRegistry(settings))
