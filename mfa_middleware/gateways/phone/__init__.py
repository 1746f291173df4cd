"""Phone gateways: how text messages and calls leave the product.

A factor never talks to a telephony provider itself. It calls :meth:`PhoneGateway.send_text` or
:meth:`PhoneGateway.place_call` on the gateway that ``runtime.py`` built once at start-up with
:func:`build_phone_gateway` from the ``[phone]`` table (:func:`phone_config_from_dict`). The call's script and
callbacks are served by the factor's ``/_mfa/`` routes, which use :func:`twiml_gather`,
:func:`twiml_say_hangup`, :func:`check_twilio_signature` and :func:`check_webhook_signature` from here.
"""

from __future__ import annotations

from ..base import GatewayUnavailable
from .base import GatewayRefused, PhoneGateway, check_extension, check_recipient, check_reference
from .config import PhoneConfig, build_phone_gateway, phone_config_from_dict
from .console import ConsoleCall, ConsolePhoneGateway, ConsoleText
from .twilio import TwilioGateway, check_twilio_signature, twilio_signature, twiml_gather, twiml_say_hangup
from .webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookPhoneGateway,
    check_webhook_signature,
    sign_webhook,
)

__all__ = [
    "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "ConsoleCall", "ConsolePhoneGateway", "ConsoleText",
    "GatewayRefused", "GatewayUnavailable", "PhoneConfig", "PhoneGateway", "TwilioGateway",
    "WebhookPhoneGateway", "build_phone_gateway", "check_extension", "check_recipient", "check_reference",
    "check_twilio_signature", "check_webhook_signature", "phone_config_from_dict", "sign_webhook",
    "twilio_signature", "twiml_gather", "twiml_say_hangup",
]
