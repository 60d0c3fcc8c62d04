"""Personalization methods, all behind `components.methods.base.Method`.

Adding a method is one new sub-package plus one entry in `build_method`.
"""

from __future__ import annotations

from components.methods.base import Method, Prediction


class UnknownMethodError(ValueError):
    pass


def build_method(name: str, **options) -> Method:
    from components.methods.baselines import make_baseline

    try:
        return make_baseline(name, **options)
    except ValueError as exc:
        raise UnknownMethodError(str(exc)) from None


__all__ = ["Method", "Prediction", "build_method", "UnknownMethodError"]
