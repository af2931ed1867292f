"""Build an object from a name registry, with errors that list what is available."""

from __future__ import annotations

import inspect


def build(registry: dict, name: str, kind: str, kwargs: dict):
    """``registry[name](**kwargs)``.

    Args:
        registry: name -> class (or function).
        kind: what is built, for messages (``"model"``, ``"loss"``).

    Raises:
        ValueError: unknown ``name`` (lists the registered names) or keyword arguments the class
            does not accept (lists the ones it does).
    """
    if name not in registry:
        plural = kind + ("es" if kind.endswith("s") else "s")
        raise ValueError(f"unknown {kind} {name!r}; available {plural}: {', '.join(sorted(registry))}")
    accepted = [p for p in inspect.signature(registry[name]).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} {name!r} has no argument(s) {unknown}; it accepts: {', '.join(accepted)}")
    return registry[name](**kwargs)


def defaults(registry: dict, name: str) -> dict:
    """The keyword arguments of ``registry[name]`` that have a default, with it (``{}`` for an
    unknown name, which :func:`build` reports)."""
    if name not in registry:
        return {}
    return {p.name: p.default for p in inspect.signature(registry[name]).parameters.values()
            if p.default is not inspect.Parameter.empty}
