"""Query parameters made from the settings of :mod:`fer8.options`, as the command line's
options are (:mod:`fer8.cli.options`): ``?fps=2&smooth=1`` takes the same names,
defaults, ranges and help as ``--fps 2 --smooth 1``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import HTTPException, Query

from fer8.options import SettingField, settings_of

T = TypeVar("T")


def query_options(cls: type[T]) -> Callable[..., T]:
    """A FastAPI dependency (``Depends(query_options(SamplingOptions))``) that reads each
    setting of ``cls`` from the query string and gives one ``cls`` object; a value out
    of range is a 422, as FastAPI answers any query it cannot read."""

    def dependency(**values: Any) -> T:
        try:
            return cls(**values)
        except ValueError as exc:  # a check the query's own bounds do not express
            raise HTTPException(422, detail=str(exc)) from None

    parameters = [
        inspect.Parameter(
            item.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=query_parameter(item),
            annotation=_annotation(item),
        )
        for item in settings_of(cls)
    ]
    dependency.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return dependency


def query_parameter(item: SettingField) -> Any:
    """FastAPI's ``Query`` for one setting: its default, bounds and description."""
    spec = item.setting
    bounds: dict[str, Any] = {}
    if spec.min is not None:
        bounds["gt" if spec.min_open else "ge"] = spec.min
    if spec.max is not None:
        bounds["lt" if spec.max_open else "le"] = spec.max
    return Query(item.default, description=spec.help or None, **bounds)


def _annotation(item: SettingField) -> Any:
    kind: Any = item.type
    if item.setting.choices is not None:
        kind = Literal[item.setting.choices]
    if item.multiple:
        kind = list[kind]
    return kind | None if item.optional else kind
