"""Gateways: how messages leave the product (email now; SMS, voice and webhooks later).

A factor never talks to a mail server itself. It builds an :class:`OutgoingEmail` and calls
:meth:`EmailGateway.send` on the gateway that ``runtime.py`` built once at start-up with
:func:`build_email_gateway` from the ``[email]`` table (:func:`email_config_from_dict`).
"""

from __future__ import annotations

from .base import (
    EmailGateway,
    GatewayUnavailable,
    OutgoingEmail,
    check_address,
    compose_message,
)
from .config import EmailConfig, email_config_from_dict
from .console import ConsoleGateway, Outbox, OutboxEntry
from .smtp import SmtpGateway

__all__ = [
    "ConsoleGateway", "EmailConfig", "EmailGateway", "GatewayUnavailable", "Outbox", "OutboxEntry",
    "OutgoingEmail", "SmtpGateway", "build_email_gateway", "check_address", "compose_message",
    "email_config_from_dict",
]


def build_email_gateway(cfg: EmailConfig, site_name: str) -> EmailGateway:
    """The gateway ``cfg`` describes; ``site_name`` becomes the From display name of every message.

    ``cfg`` comes from :func:`email_config_from_dict`, which has already checked every value, so this does
    not fail for a parsed configuration.
    """
    if cfg.gateway == "console":
        return ConsoleGateway(site_name=site_name, from_address=cfg.from_address, outbox_size=cfg.outbox_size)
    assert cfg.host is not None, "a parsed smtp configuration always has a host"
    return SmtpGateway(host=cfg.host, port=cfg.port, security=cfg.security, username=cfg.username,
                       password=cfg.password, from_address=cfg.from_address, site_name=site_name,
                       timeout=cfg.timeout, ca_file=cfg.ca_file)
