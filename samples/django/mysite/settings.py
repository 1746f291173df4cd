"""Settings of the Django sample: one settings file, SQLite, no admin site, no templates.

Who the user is comes from mfa_middleware: MFAMiddleware (see ``wsgi.py``) signs the user in, with a second
factor, and sets ``REMOTE_USER`` in the WSGI environ; Django's ``RemoteUserMiddleware`` reads it from
``request.META["REMOTE_USER"]`` and ``RemoteUserBackend`` turns it into ``request.user`` (creating the Django
user the first time). Without a session of ours there is no ``REMOTE_USER``, and RemoteUserMiddleware signs the
Django session out. A ``Remote-User`` request header is ``HTTP_REMOTE_USER``, never ``REMOTE_USER``, and
MFAMiddleware removes it anyway.

Django needs its own tables for those users (``auth_user``) and its sessions: ``python manage.py migrate``
creates them in ``$DJANGO_DATABASE`` (a SQLite file; default ``django.db`` beside ``manage.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Set DJANGO_SECRET_KEY outside a trial run. Django signs its own session cookie with it; who is signed in is
# still decided on every request by REMOTE_USER.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "django-insecure-sample-only-set-DJANGO_SECRET_KEY"
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After AuthenticationMiddleware: request.user from request.META["REMOTE_USER"], set by MFAMiddleware.
    "django.contrib.auth.middleware.RemoteUserMiddleware",
]

AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.RemoteUserBackend"]
LOGIN_URL = "/_mfa/login"  # where @login_required sends anyone MFAMiddleware has not signed in

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DATABASE") or BASE_DIR / "django.db",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
