"""URLs of the Django sample: a home page, a public page and an admin page (not Django's admin site)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("public/", views.public, name="public"),
    path("admin/", views.admin, name="admin"),
]
