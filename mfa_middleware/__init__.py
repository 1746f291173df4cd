"""mfa_middleware: multi-factor authentication in front of existing WSGI apps.

    from mfa_middleware import MFAMiddleware
    app = MFAMiddleware(app, "mfa.toml")
"""

from __future__ import annotations

from .adapters.wsgi import MFAMiddleware
from .config import Config, ConfigError, load_config
from .core.decision import Identity

__all__ = ["Config", "ConfigError", "Identity", "MFAMiddleware", "load_config"]
__version__ = "0.1.0"
