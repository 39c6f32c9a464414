"""Old import path of the decision base (now :mod:`medfuse.estimators.base`)."""

from medfuse.estimators.base import DecisionMixin

__all__ = ["DecisionMixin"]
