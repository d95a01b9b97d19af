"""click options made from the settings of :mod:`fer8.options`: each field of a command's
options dataclass, and of the groups it holds (:func:`fer8.options.group`), becomes one
option (``--NAME``, its type, default, range or choices, and its help), and the command
receives one options object instead of a parameter per option.

Example (:func:`fer8.cli.common.command` does this for each ``fer8`` command):
    >>> @click.command()
    ... @with_options(ExportOptions)
    ... def export(options: ExportOptions) -> None: ...
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from fer8.options import SettingField, SettingGroup, groups_of, settings_of

F = TypeVar("F", bound=Callable[..., Any])


def with_options(cls: type, name: str = "options") -> Callable[[F], F]:
    """Add the options of every setting of ``cls`` to a click command, in the order of
    its fields; the command gets one ``cls`` object as its keyword ``name``. A value
    that the settings' checks refuse (:class:`fer8.options.Options`) is a usage error
    (exit 2) naming it."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                kwargs[name] = _build(cls, kwargs, "")
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            return command(*args, **kwargs)

        decorated: Any = wrapper
        # click lists a command's options in the order of its decorators, the last first.
        for dest, item in reversed(list(_leaves(cls, ""))):
            decorated = click_option(item, dest)(decorated)
        return decorated

    return decorate


def _leaves(
    cls: type, prefix: str, within: SettingGroup | None = None
) -> Iterator[tuple[str, SettingField]]:
    """(parameter name, setting) for every setting of ``cls`` the command line offers,
    the settings of its groups in their place (``classifier__batch_size``), with the
    defaults and help the group ``within`` gives them."""
    settings = {item.name: item for item in settings_of(cls)}
    groups = {group.name: group for group in groups_of(cls)}
    for field in dataclasses.fields(cls):
        if field.name in groups:
            group = groups[field.name]
            yield from _leaves(group.type, f"{prefix}{field.name}__", group)
        elif field.name in settings and settings[field.name].setting.cli:
            yield f"{prefix}{field.name}", _tailor(settings[field.name], within)


def _tailor(item: SettingField, within: SettingGroup | None) -> SettingField:
    """The setting with the default and help that the group holding it gives it."""
    if within is None:
        return item
    spec = item.setting
    if item.name in within.help:
        spec = dataclasses.replace(spec, help=within.help[item.name])
    return dataclasses.replace(item, default=getattr(within.default, item.name), setting=spec)


def _build(cls: type, kwargs: dict[str, Any], prefix: str) -> Any:
    """A ``cls`` from the parameters named ``prefix + field`` (taken out of ``kwargs``),
    its groups built first."""
    values = {
        item.name: kwargs.pop(prefix + item.name)
        for item in settings_of(cls)
        if prefix + item.name in kwargs
    }
    for group in groups_of(cls):
        values[group.name] = _build(group.type, kwargs, f"{prefix}{group.name}__")
    return cls(**values)


def click_option(item: SettingField, dest: str) -> Callable[[F], F]:
    """The click option of one setting, whose value goes to the parameter ``dest``."""
    spec = item.setting
    flag = spec.flag or f"--{item.name.replace('_', '-')}"
    is_flag = item.type is bool and "/" not in flag
    options: dict[str, Any] = {
        "help": spec.help or None,
        "metavar": spec.metavar,
        "multiple": item.multiple,
    }
    if item.required:
        options["required"] = True
    else:
        options["default"] = item.default
        shown = item.default not in (None, ()) and not (is_flag and not item.default)
        options["show_default"] = shown if spec.show_default is None else spec.show_default
    if is_flag:
        options["is_flag"] = True
    elif item.type is not bool:
        options["type"] = click_type(item)
    return click.option(flag, dest, **options)


def click_type(item: SettingField) -> click.ParamType | type:
    """The click type that checks a setting as its field does: a choice, a range, a path."""
    spec = item.setting
    if spec.choices is not None:
        return click.Choice(spec.choices)
    if spec.path is not None:
        kinds = {
            "dir": {"file_okay": False},
            "file": {"dir_okay": False},
            "existing file": {"exists": True, "dir_okay": False},
        }
        return click.Path(path_type=item.type, **kinds[spec.path])
    if item.type in (int, float) and (spec.min is not None or spec.max is not None):
        bounds = {"min_open": spec.min_open, "max_open": spec.max_open}
        if item.type is int:
            return click.IntRange(spec.min, spec.max, **bounds)  # type: ignore[arg-type]
        return click.FloatRange(spec.min, spec.max, **bounds)
    return item.type
