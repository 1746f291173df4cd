"""mfa_middleware: multi-factor authentication in front of existing WSGI apps.

    from mfa_middleware import MFAMiddleware          # WSGI
    app = MFAMiddleware(app, "mfa.toml")

    from mfa_middleware import ASGIMFAMiddleware      # ASGI
    app = ASGIMFAMiddleware(app, "mfa.toml")
"""

from __future__ import annotations

from .config import Config, ConfigError, load_config
from .core.decision import Identity
from .middleware import ASGIMFAMiddleware, ForwardAuthApp, MFAMiddleware

__all__ = ["ASGIMFAMiddleware", "Config", "ConfigError", "ForwardAuthApp", "Identity", "MFAMiddleware", "load_config"]
__version__ = "0.1.0"
