"""click options made from the settings of :mod:`fer8.options`: each field of an options
dataclass becomes one option (``--NAME``, its type, default, range or choices, and its
help), and the command receives one options object per group instead of a parameter per
option.

Example:
    >>> @cli.command()
    ... @with_options(model=ModelOptions, detection=DetectionOptions)
    ... def count(model: ModelOptions, detection: DetectionOptions) -> None: ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from fer8.options import SettingField, settings_of

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Tailored:
    """An options group as one command offers it: another help or default for some of
    its settings (``--model``'s help says what a command does with the model)."""

    cls: type
    help: Mapping[str, str] = field(default_factory=dict)
    default: Mapping[str, Any] = field(default_factory=dict)


def tailored(
    cls: type, *, help: Mapping[str, str] | None = None, default: Mapping[str, Any] | None = None
) -> Tailored:
    """``cls`` with ``help`` and ``default`` replaced for the settings they name."""
    return Tailored(cls, help or {}, default or {})


def with_options(**groups: type | Tailored) -> Callable[[F], F]:
    """Add the options of each group to a click command, in the order of the groups and
    of their fields; the command gets each group as one object, under the group's
    keyword. A value the group's checks refuse (:class:`fer8.options.Options`) is a
    usage error (exit 2) naming it."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for name, group in groups.items():
                cls = group.cls if isinstance(group, Tailored) else group
                prefix = f"{name}__"
                values = {
                    key[len(prefix) :]: kwargs.pop(key)
                    for key in list(kwargs)
                    if key.startswith(prefix)
                }
                try:
                    kwargs[name] = cls(**values)
                except ValueError as exc:
                    raise click.UsageError(str(exc)) from None
            return command(*args, **kwargs)

        decorated: Any = wrapper
        # click lists a command's options in the order of its decorators, the last first.
        for name, group in reversed(groups.items()):
            tailoring = group if isinstance(group, Tailored) else Tailored(group)
            for item in reversed(list(settings_of(tailoring.cls))):
                if item.setting.cli:
                    decorated = click_option(
                        item,
                        f"{name}__{item.name}",
                        help=tailoring.help.get(item.name),
                        default=tailoring.default.get(item.name, item.default),
                    )(decorated)
        return decorated

    return decorate


def click_option(
    item: SettingField, dest: str, *, help: str | None = None, default: Any = None
) -> Callable[[F], F]:
    """The click option of one setting, whose value goes to the parameter ``dest``."""
    spec = item.setting
    flag = spec.flag or f"--{item.name.replace('_', '-')}"
    is_flag = item.type is bool and "/" not in flag
    options: dict[str, Any] = {
        "help": help or spec.help or None,
        "metavar": spec.metavar,
        "multiple": item.multiple,
    }
    if item.required:
        options["required"] = True
    else:
        options["default"] = default
        shown = default not in (None, ()) and not (is_flag and not default)
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
