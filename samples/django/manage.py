#!/usr/bin/env python
"""Django's command-line utility for the sample: ``python manage.py migrate``, ``python manage.py runserver``.

``runserver`` serves ``WSGI_APPLICATION`` (``mysite.wsgi.application``), which is the app wrapped by
MFAMiddleware, so the development server is protected too.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
