"""Second factors: the protocol (``base``) and its implementations."""

from __future__ import annotations

from .base import (EnrollError, EnrollField, EnrollmentView, Factor, FactorContext, FactorRegistry, Interaction,
                   Outcome, Prompt, Verification)

__all__ = ["EnrollError", "EnrollField", "EnrollmentView", "Factor", "FactorContext", "FactorRegistry", "Interaction",
           "Outcome", "Prompt", "Verification"]
