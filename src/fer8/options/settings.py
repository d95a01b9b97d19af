"""The machinery of a setting: :func:`setting` declares a field with its range and
choices, :func:`group` a field that holds a group of settings; :func:`settings_of` reads
them back for a front end, with the help the class's docstring gives each; :class:`Options`
checks every value when an options object is made."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: What a :class:`~pathlib.Path` setting names (:attr:`Setting.path`).
PathKind = Literal["file", "dir", "existing file"]


@dataclass(frozen=True)
class Setting:
    """What a field says beyond its type and default.

    Attributes:
        help: One or two sentences for ``--help`` and the API's documentation; left
            empty, the field's entry in its class docstring's ``Attributes:`` section.
        flag: The command line's spelling when it is not ``--NAME`` (``--out``), or a
            pair of switches (``--grayscale/--colour``).
        choices: The values allowed, for a string.
        min: The smallest value allowed (``min_open``: only values above it).
        max: The largest value allowed (``max_open``: only values below it).
        metavar: How ``--help`` names the value (``SECONDS``).
        show_default: Whether ``--help`` shows the default; None: when there is one.
        path: For a :class:`~pathlib.Path`, what it must name: ``"file"`` or ``"dir"``
            (either may not exist yet), or ``"existing file"``.
        cli: False for a setting the command line does not offer.
        strict: False where the choices or the range are what the command line
            offers, and the library takes other values too (a model's own backbone, a
            test's tiny input).
    """

    help: str = ""
    flag: str | None = None
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    metavar: str | None = None
    show_default: bool | None = None
    path: PathKind | None = None
    cli: bool = True
    strict: bool = True

    def check(self, name: str, value: Any) -> None:
        """Raise ValueError naming ``name`` if ``value`` is outside the choices or range."""
        if not self.strict:
            return
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{name} must be {_either(self.choices)}, not {value!r}")
        low = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        if low or high:
            raise ValueError(f"{name} must be {self.range_text()}")

    def range_text(self) -> str:
        """The range in words: ``between 0 and 1``, ``at least 0 and below 1``, ``above 0``."""
        lower = (
            f"{'above' if self.min_open else 'at least'} {self.min:g}"
            if self.min is not None
            else ""
        )
        upper = (
            f"{'below' if self.max_open else 'at most'} {self.max:g}"
            if self.max is not None
            else ""
        )
        if lower and upper and not (self.min_open or self.max_open):
            return f"between {self.min:g} and {self.max:g}"
        return " and ".join(part for part in (lower, upper) if part)


def setting(default: Any = dataclasses.MISSING, help: str = "", **details: Any) -> Any:
    """A dataclass field that is a setting: ``default`` (none: required), ``help``, and the
    rest of :class:`Setting` (``min=1``, ``choices=(...)``, ``flag="--out"``...)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(help=help, **details)})


def group(cls: type, *, help: Mapping[str, str] | None = None, **defaults: Any) -> Any:
    """A dataclass field that holds a group of settings (an :class:`Options` of its own,
    shared by several commands): ``defaults`` and ``help`` replace the group's own for
    the settings they name, where this command wants others (``batch_size=32``)."""
    return dataclasses.field(
        default_factory=functools.partial(cls, **defaults),
        metadata={"group": dict(help or {})},
    )


@dataclass(frozen=True)
class SettingGroup:
    """A field of an options dataclass that holds a group of settings (:func:`group`).

    Attributes:
        name: The field's name (``classifier``).
        type: The group's options class (:class:`~fer8.options.ClassifierOptions`).
        default: The group's default object: its values are this command's defaults.
        help: The help this command gives some of the group's settings instead of theirs.
    """

    name: str
    type: type
    default: Any
    help: Mapping[str, str]


@functools.cache
def groups_of(cls: type) -> tuple[SettingGroup, ...]:
    """Every group of settings in an options dataclass, in the order of its fields."""
    hints = typing.get_type_hints(cls)
    return tuple(
        SettingGroup(item.name, hints[item.name], item.default_factory(), item.metadata["group"])  # type: ignore[operator]
        for item in dataclasses.fields(cls)
        if "group" in item.metadata
    )


@dataclass(frozen=True)
class SettingField:
    """A setting as a front end reads it: the field's name, its type without ``None``
    (``int``, ``float``, ``str``, ``bool`` or ``Path``), whether it takes several values
    (a tuple), whether None is allowed, its default (``dataclasses.MISSING``: required)
    and its :class:`Setting`."""

    name: str
    type: type
    multiple: bool
    optional: bool
    default: Any
    setting: Setting

    @property
    def required(self) -> bool:
        """Whether the setting has no default (the command line requires it)."""
        return self.default is dataclasses.MISSING


def settings_of(cls: type) -> tuple[SettingField, ...]:
    """Every setting of an options dataclass, in the order of its fields. A setting's help,
    unless given to :func:`setting`, is its entry in the ``Attributes:`` section of the
    class's docstring (or a base class's): the library's documentation and ``--help`` are
    one text."""
    # Cached behind a plain function: mypy takes a frozen dataclass's class for
    # unhashable, and would refuse it as the cache's key at every caller.
    return _settings_of(cls)


@functools.cache
def _settings_of(cls: type) -> tuple[SettingField, ...]:
    hints = typing.get_type_hints(cls)
    documented = documented_attributes(cls)
    found = []
    for item in dataclasses.fields(cls):
        if "setting" not in item.metadata:
            continue
        kind, multiple, optional = _unwrap(hints[item.name])
        spec = item.metadata["setting"]
        if not spec.help and item.name in documented:
            spec = dataclasses.replace(spec, help=documented[item.name])
        found.append(SettingField(item.name, kind, multiple, optional, item.default, spec))
    return tuple(found)


@functools.cache
def documented_attributes(cls: type) -> dict[str, str]:
    """Each attribute's text in the Google-style ``Attributes:`` sections of the
    docstrings of ``cls`` and its bases (a subclass's text wins), on one line."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines()
        if "Attributes:" not in lines:
            continue
        name = ""
        for line in lines[lines.index("Attributes:") + 1 :]:
            if not line.startswith("    "):  # a blank line or the next section ends it
                break
            if line.startswith("        ") and name:
                found[name] += " " + line.strip()
            else:
                name, _, text = line.strip().partition(":")
                found[name] = text.strip()
    return found


def _unwrap(hint: Any) -> tuple[type, bool, bool]:
    """(the plain type, whether a tuple of it, whether None is allowed) of an annotation
    such as ``int | None`` or ``tuple[str, ...]``."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    if optional:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


@dataclass(frozen=True)
class Options:
    """The base of every options dataclass: each value is checked against its setting
    when the object is made (a ValueError names the setting and what it must be)."""

    def __post_init__(self) -> None:
        for item in settings_of(type(self)):
            value = getattr(self, item.name)
            if value is None and item.optional:
                continue
            for one in value if item.multiple else (value,):
                item.setting.check(item.name, one)

    def keys(self) -> tuple[str, ...]:
        """The settings' names: an options object unpacks as keyword arguments
        (``predictor.predict_video(path, **sampling)``)."""
        return tuple(item.name for item in dataclasses.fields(self))

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def to_kwargs(self) -> dict[str, Any]:
        """The settings (and groups) by name, not copied (unlike :func:`dataclasses.asdict`)."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}


def _either(choices: tuple[str, ...]) -> str:
    words = [str(choice) for choice in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
