"""Adapters between a server interface (WSGI; ASGI later) and the pure core."""
