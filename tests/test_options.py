"""One definition per setting: the options dataclasses of fer8.options, the click options
made from them (fer8.cli.options), the API's query (fer8.serving.query) and TrainConfig."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fer8.cli import cli
from fer8.cli.options import with_options
from fer8.options import (
    ClassifierOptions,
    DetectionOptions,
    Options,
    SamplingOptions,
    group,
    setting,
)
from fer8.options.commands import PredictOptions


@dataclass(frozen=True, kw_only=True)
class _Sizes(Options):
    """A group of settings, shared by commands.

    Attributes:
        count: How many, at least 2.
        scale: Growth per step,
            above 1.
    """

    count: int = setting(4, min=2)
    scale: float = setting(1.5, min=1, min_open=True, max=8)


@dataclass(frozen=True, kw_only=True)
class _Command(Options):
    """A command's settings.

    Attributes:
        out: Where to write.
        kind: What to make.
        sizes: Its sizes.
        fast: Go fast.
    """

    out: Path = setting(path="dir")
    kind: str = setting("round", choices=("round", "square"))
    sizes: _Sizes = group(_Sizes, count=6, help={"scale": "Growth, for this command."})
    fast: bool = setting(False)


def _command() -> tuple[click.Command, list]:
    received: list = []

    @click.command()
    @with_options(_Command)
    def command(options: _Command) -> None:
        received.append(options)

    return command, received


def test_a_command_receives_one_options_object_with_its_values(tmp_path):
    command, received = _command()
    args = ["--out", tmp_path, "--kind", "square", "--count", "3", "--scale", "2", "--fast"]
    result = CliRunner().invoke(command, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert received == [
        _Command(out=tmp_path, kind="square", sizes=_Sizes(count=3, scale=2.0), fast=True)
    ]
    CliRunner().invoke(command, ["--out", str(tmp_path)])
    assert received[1].sizes == _Sizes(count=6)  # the command's default for its group


def test_ranges_and_choices_are_enforced_by_click_with_exit_2(tmp_path):
    command, received = _command()
    for args, said in (
        (["--count", "1"], "--count"),
        (["--scale", "1"], "--scale"),
        (["--scale", "9"], "--scale"),
        (["--kind", "oval"], "--kind"),
        ([], "--out"),  # a setting without a default is required
    ):
        out = [] if not args else ["--out", str(tmp_path)]
        result = CliRunner().invoke(command, [*out, *args])
        assert result.exit_code == 2 and said in result.output, (args, result.output)
    assert received == []


def test_help_shows_each_settings_help_default_and_range():
    command, _ = _command()
    text = " ".join(CliRunner().invoke(command, ["--help"]).output.split())
    assert "--count INTEGER RANGE How many, at least 2. [default: 6; x>=2]" in text
    assert "--scale FLOAT RANGE Growth, for this command. [default: 1.5; 1<x<=8]" in text
    assert "--kind [round|square] What to make. [default: round]" in text
    assert "--fast Go fast." in text and "--out DIRECTORY Where to write. [required]" in text


def test_the_library_checks_what_click_checks():
    with pytest.raises(ValueError, match="count must be at least 2"):
        _Sizes(count=1)
    with pytest.raises(ValueError, match="scale must be above 1 and at most 8"):
        _Sizes(scale=1.0)
    with pytest.raises(ValueError, match="kind must be round or square, not 'oval'"):
        _Command(out=Path("x"), kind="oval")
    with pytest.raises(FrozenInstanceError):
        _Sizes().count = 3  # type: ignore[misc]
    assert SamplingOptions(fps=2.0).to_kwargs() == {"fps": 2.0, "every_frame": False, "smooth": 0}
    assert dict(**SamplingOptions(smooth=1.0)) == {"fps": 5.0, "every_frame": False, "smooth": 1}
    assert DetectionOptions(detector="haar", haar_min_neighbors=3).detector_kwargs() == {
        "detector": "haar",
        "detector_options": {"min_neighbors": 3},
    }


def test_a_check_across_settings_is_a_usage_error_naming_them(tmp_path):
    """DetectionOptions refuses Haar's settings for YuNet when it is made: exit 2."""
    result = CliRunner().invoke(
        cli, ["predict", str(tmp_path), "--haar-scale-factor", "1.1"], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert "--haar-scale-factor and --haar-min-neighbors are settings of the haar" in result.output


def test_the_commands_read_their_defaults_from_the_options():
    """A default changes in one line: predict's help shows the dataclass's default."""
    help_text = " ".join(CliRunner().invoke(cli, ["predict", "--help"]).output.split())
    assert f"[default: {SamplingOptions().fps}; 0<x<=1000]" in help_text
    assert f"Faces per forward pass of the model. [default: {ClassifierOptions().batch_size};" in (
        help_text
    )
    evaluate = " ".join(CliRunner().invoke(cli, ["evaluate", "--help"]).output.split())
    assert "[default: 32; x>=1]" in evaluate  # evaluate's own default for the shared group
    assert PredictOptions().classifier.batch_size == 16


def test_the_api_query_takes_the_same_settings_as_the_command_line():
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from fer8.serving.query import query_options

    app = FastAPI()

    @app.get("/sampling")
    def sampling(options: SamplingOptions = Depends(query_options(SamplingOptions))):  # noqa: B008
        return options.to_kwargs()

    client = TestClient(app)
    assert client.get("/sampling").json() == {"fps": 5.0, "every_frame": False, "smooth": 0.0}
    assert client.get("/sampling?fps=2&every_frame=true&smooth=1").json() == {
        "fps": 2.0,
        "every_frame": True,
        "smooth": 1.0,
    }
    for query in ("fps=0", "fps=1001", "smooth=-1", "smooth=3601"):
        assert client.get(f"/sampling?{query}").status_code == 422, query
    described = {
        parameter["name"]: parameter["description"]
        for parameter in app.openapi()["paths"]["/sampling"]["get"]["parameters"]
    }
    assert described["fps"] == "Video frames analysed per second of video."


@pytest.mark.slow  # fer8 train imports TensorFlow
def test_train_hands_its_options_to_the_training_config(tmp_path, monkeypatch):
    """fer8 train builds TrainConfig from its options: the values given, the
    defaults of TrainOptions for the rest, paths made absolute, the detector's settings."""
    import fer8.training.loop as loop
    from fer8.options.training import TrainOptions

    data = tmp_path / "faces"
    (data / "happy").mkdir(parents=True)
    taken = {}

    def fake_train(config, run_dir, **kwargs):
        taken.update(config=config, run_dir=run_dir, **kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            "faces",
            "--out",
            "run",
            "--epochs",
            "3",
            "--class-weighting",
            "balanced",
            "--colour",
            "--backbone-weights",
            "none",
            "--detector",
            "haar",
            "--haar-min-neighbors",
            "3",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    config = taken["config"]
    assert (config.epochs, config.class_weighting, config.grayscale) == (3, "balanced", False)
    assert config.data == (str(data),) and config.val is None
    assert (config.detector, dict(config.detector_options)) == ("haar", {"min_neighbors": 3})
    assert config.learning_rate == TrainOptions().learning_rate  # not given: the default
    assert (taken["run_dir"], taken["workers"], taken["resume"]) == (Path("run"), 1, False)
    assert loop.TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="ema_momentum must be at least 0 and below 1"):
        loop.TrainConfig(data="faces", ema_momentum=1.0)


def test_the_library_and_the_options_share_each_default():
    """A default is written once: the library's functions and the options fields read the
    same constant, so ``Predictor()`` and ``fer8 predict`` without options agree."""
    import inspect

    from fer8.pipeline.predictor import Predictor

    predictor = inspect.signature(Predictor).parameters
    assert predictor["batch_size"].default == ClassifierOptions().batch_size
    assert predictor["flip"].default == ClassifierOptions().flip
    assert predictor["detector"].default == DetectionOptions().detector
    for method in (Predictor.predict_video, Predictor.predict_frames):
        parameters = inspect.signature(method).parameters
        for name, default in SamplingOptions().to_kwargs().items():
            if name in parameters:
                assert parameters[name].default == default, (method.__name__, name)


def test_predict_hands_the_predictor_every_setting_by_its_parameter_name():
    """``PredictOptions.predictor_kwargs`` is what a local run and a Ray run build their
    predictors from: each key is one of Predictor's parameters, with the option's value."""
    import inspect

    from fer8.pipeline.predictor import Predictor

    options = PredictOptions(
        max_faces=2,
        max_pixels=1000,
        classifier=ClassifierOptions(batch_size=4, flip=True),
        detection=DetectionOptions(detector="haar", min_face=30),
    )
    kwargs = options.predictor_kwargs()
    assert set(kwargs) <= set(inspect.signature(Predictor).parameters)
    assert kwargs["max_faces"] == 2 and kwargs["max_pixels"] == 1000
    assert kwargs["batch_size"] == 4 and kwargs["flip"] is True
    assert kwargs["detector"] == "haar" and kwargs["detector_options"]["min_size"] == 30


def test_a_group_is_described_by_a_typed_record():
    """groups_of gives each group's field name, class, this command's default object and
    the help it replaces, as named attributes."""
    from fer8.options import SettingGroup, groups_of

    (sizes,) = groups_of(_Command)
    assert isinstance(sizes, SettingGroup)
    assert (sizes.name, sizes.type) == ("sizes", _Sizes)
    assert sizes.default == _Sizes(count=6)
    assert sizes.help == {"scale": "Growth, for this command."}


def test_every_option_of_every_command_has_help():
    """A setting's help is its entry in its class's ``Attributes:``: one left out there
    (fer8 serve's --port was) is an option that --help does not explain."""
    bare = [
        f"fer8 {name} {option.opts[0]}"
        for name, command in cli.commands.items()
        for option in command.params
        if isinstance(option, click.Option) and not option.help
    ]
    assert bare == []
