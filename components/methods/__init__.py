"""Personalization methods, all behind `components.methods.base.Method`.

Adding a method is one new sub-package plus one entry in `build_method`.
"""

from __future__ import annotations

from components.methods.base import Method, Prediction


class UnknownMethodError(ValueError):
    pass


def build_method(name: str, task: str | None = None, backbone=None, repo=".", profile=None, **options) -> Method:
    """A baseline by name, a trained per-population method (`tap-per`, `pplug`: each
    population's serving model from the MLflow registry, which needs `task` and `backbone`),
    or Attn-GS at a budget (`attn-gs@B` and its baselines `random-marking@B`, `mark-all@B`,
    `direct-summary@B`: the task's registered marker and compressor)."""
    from components.methods.attn_gs.registry import load_method, parse_name
    from components.methods.baselines import make_baseline
    from components.methods.populations import POPULATION_METHODS, load_router

    try:
        attn_gs = parse_name(name)
    except ValueError as exc:
        raise UnknownMethodError(str(exc)) from None
    if attn_gs is not None:
        if task is None:
            raise UnknownMethodError(f"{name} needs the task to load its marker and compressor")
        if profile is None:
            from components.config import load_profile

            profile = load_profile(None, f"{repo}/params.yaml")
        return load_method(name, task, profile, repo)
    if name in POPULATION_METHODS:
        if task is None or backbone is None:
            raise UnknownMethodError(f"{name} needs the task and the backbone to load its population models")
        return load_router(name, task, backbone, repo)
    try:
        return make_baseline(name, **options)
    except ValueError as exc:
        raise UnknownMethodError(f"{exc}; or a trained method: {', '.join(POPULATION_METHODS)}, "
                                 "attn-gs@B") from None


__all__ = ["Method", "Prediction", "build_method", "UnknownMethodError"]
