"""Second factors: the protocol (``base``) and its implementations."""

from __future__ import annotations

from .base import (Access, EnrollError, EnrollField, EnrollmentView, Factor, FactorContext, FactorRegistry,
                   FactorRoute, Interaction, NoRoutes, Outcome, Prompt, RouteContext, TooSoon, Verification)

__all__ = ["Access", "EnrollError", "EnrollField", "EnrollmentView", "Factor", "FactorContext", "FactorRegistry",
           "FactorRoute", "Interaction", "NoRoutes", "Outcome", "Prompt", "RouteContext", "TooSoon", "Verification"]
