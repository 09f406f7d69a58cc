"""Shared package of the TradesMate Pro IoT pipeline: configuration, contracts, database, CLI."""

from tmiot.config import Settings, load_settings
from tmiot.errors import ConfigError, DatabaseError, ServiceError, TmiotError

__all__ = [
    "ConfigError",
    "DatabaseError",
    "ServiceError",
    "Settings",
    "TmiotError",
    "load_settings",
]
__version__ = "0.1.0"
