"""The WSGI entry point of the Django sample: Django's app wrapped by MFAMiddleware.

Serve it with ``gunicorn --workers 2 mysite.wsgi`` (from ``samples/django``), ``waitress-serve
mysite.wsgi:application``, or ``python manage.py runserver`` (which serves ``WSGI_APPLICATION``, this app).
The configuration is ``$MFA_CONFIG``, or ``mfa.toml`` beside ``manage.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.wsgi import get_wsgi_application

from mfa_middleware import MFAMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()

# Protect the app: the middleware answers /_mfa/* itself and applies the rules of mfa.toml to the rest.
CONFIG = os.environ.get("MFA_CONFIG") or str(Path(__file__).resolve().parent.parent / "mfa.toml")
application = MFAMiddleware(application, CONFIG)
