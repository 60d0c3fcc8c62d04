"""Personalization methods, all behind `components.methods.base.Method`.

Adding a method is one new sub-package plus one entry in `build_method`.
"""

from __future__ import annotations

from components.methods.base import Method, Prediction


class UnknownMethodError(ValueError):
    pass


def build_method(name: str, task: str | None = None, backbone=None, repo=".", **options) -> Method:
    """A baseline by name, or a trained per-population method (`tap-per`, `pplug`: each
    population's serving model from the MLflow registry, which needs `task` and `backbone`)."""
    from components.methods.baselines import make_baseline
    from components.methods.populations import POPULATION_METHODS, load_router

    if name in POPULATION_METHODS:
        if task is None or backbone is None:
            raise UnknownMethodError(f"{name} needs the task and the backbone to load its population models")
        return load_router(name, task, backbone, repo)
    try:
        return make_baseline(name, **options)
    except ValueError as exc:
        raise UnknownMethodError(f"{exc}; or a trained method: {', '.join(POPULATION_METHODS)}") from None


__all__ = ["Method", "Prediction", "build_method", "UnknownMethodError"]
