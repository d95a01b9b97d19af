"""Every setting a front end offers, defined once.

A setting is a field of a frozen dataclass, declared with :func:`setting`: its type (the
annotation), its default, its range or choices, and its help (the field's entry in the
class docstring's ``Attributes:``, so the library's documentation is ``--help``). The
command line (:mod:`fer8.cli.options` turns the fields into click options), the HTTP
API's query parameters (:mod:`fer8.serving.query`), ``config.json`` of a training run
(:class:`~fer8.training.loop.TrainConfig` extends
:class:`~fer8.options.training.TrainOptions`) and library callers all read the same
field, so a default or a range changes in one line; :class:`Options` checks every value
against it.

Settings are grouped by what reads them: :class:`DetectionOptions` (finding faces),
:class:`SamplingOptions` (which video frames), :class:`ClassifierOptions` and
:class:`ModelOptions`, shared by several commands; :mod:`fer8.options.commands` and
:mod:`fer8.options.training` hold each command's settings, the shared groups among them
(:func:`group`).

Example:
    >>> from fer8.options import SamplingOptions
    >>> SamplingOptions(fps=2.0).to_kwargs()
    {'fps': 2.0, 'every_frame': False, 'smooth': 0.0}
"""

from __future__ import annotations

from fer8.options.pipeline import (
    ClassifierOptions,
    DetectionOptions,
    ModelOptions,
    SamplingOptions,
)
from fer8.options.settings import (
    Options,
    Setting,
    SettingField,
    SettingGroup,
    group,
    groups_of,
    setting,
    settings_of,
)

__all__ = [
    "ClassifierOptions",
    "DetectionOptions",
    "ModelOptions",
    "Options",
    "SamplingOptions",
    "Setting",
    "SettingField",
    "SettingGroup",
    "group",
    "groups_of",
    "setting",
    "settings_of",
]
