"""The pictures fer8 draws for people to read: evaluation's confusion matrices and a
video's timeline. Judged from the figure's own texts, before it is rasterised."""

from __future__ import annotations

import pytest

from fer8.training import plots
from fer8.training.evaluation import confusion


@pytest.fixture
def saved_figures(monkeypatch):
    """Each figure ``plots`` saves, as its title and its panels' titles."""
    figures: list[tuple[str, list[str]]] = []
    real_save = plots._save

    def record(figure, path):
        figures.append(
            (
                figure._suptitle.get_text() if figure._suptitle else "",
                [axis.get_title() for axis in figure.axes],
            )
        )
        return real_save(figure, path)

    monkeypatch.setattr(plots, "_save", record)
    return figures


def test_each_confusion_picture_is_titled_with_its_dataset(saved_figures, tmp_path):
    evaluation = confusion(["happy", "sad", "sad"], ["happy", "sad", "happy"], ("happy", "sad"))
    plots.plot_confusion(evaluation, tmp_path / "a.png", title="jaffe (faces)")
    plots.plot_confusion(evaluation, tmp_path / "b.png", title="expw@val (labelled boxes)")
    (first, first_panels), (second, second_panels) = saved_figures
    assert first.startswith("jaffe (faces): accuracy 66.7%")
    assert second.startswith("expw@val (labelled boxes): accuracy 66.7%")
    assert first_panels == second_panels == ["Counts", "Row-normalised (recall)"]
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0


def test_an_untitled_confusion_picture_starts_with_its_figures(saved_figures, tmp_path):
    evaluation = confusion(["happy", "sad"], ["happy", "happy"], ("happy", "sad"))
    plots.plot_confusion(evaluation, tmp_path / "c.png")
    assert saved_figures[0][0].startswith("accuracy 50.0%")


# --- colours of the expressions -----------------------------------------------------------

#: Machado, Oliveira & Fernandes (2009): full protanopia, deuteranopia and tritanopia, as
#: matrices on linear RGB.
COLOUR_BLINDNESS = {
    "protanopia": [
        [0.152286, 1.052583, -0.204868],
        [0.114503, 0.786281, 0.099216],
        [-0.003882, -0.048116, 1.051998],
    ],
    "deuteranopia": [
        [0.367322, 0.860646, -0.227968],
        [0.280085, 0.672501, 0.047413],
        [-0.011820, 0.042940, 0.968881],
    ],
    "tritanopia": [
        [1.255528, -0.076749, -0.178779],
        [-0.078411, 0.930809, 0.147602],
        [0.004733, 0.691367, 0.303900],
    ],
}


def _lab(rgb, vision=None):
    """CIELAB (D65) of an sRGB colour, as a reader with ``vision`` sees it."""
    import numpy as np

    c = np.asarray(rgb, float) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    if vision is not None:
        linear = np.clip(np.asarray(COLOUR_BLINDNESS[vision]) @ linear, 0, 1)
    xyz = (
        np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
        @ linear
        / np.array([0.95047, 1.0, 1.08883])
    )
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("vision", [None, *COLOUR_BLINDNESS])
def test_the_seven_expressions_colours_stay_apart(vision):
    """Every pair at least 15 apart (CIE76), also as colour-blind readers see them; the
    evenly spaced hues put fearful and happy 3.9 apart for deuteranopes."""
    import itertools

    import numpy as np

    from fer8.labels import EXPRESSIONS
    from fer8.pipeline.annotate import label_color

    seven = [label for label in EXPRESSIONS if label != "worry"]
    for a, b in itertools.combinations(seven, 2):
        distance = np.linalg.norm(_lab(label_color(a), vision) - _lab(label_color(b), vision))
        assert distance >= 15, (a, b, vision, round(float(distance), 1))


def test_the_web_page_draws_in_the_same_colours():
    import re

    from conftest import ROOT

    from fer8.pipeline.annotate import label_color

    script = (ROOT / "src/fer8/serving/web/app.js").read_text()
    table = dict(re.findall(r"(\w+): \[(\d+, \d+, \d+)\]", script))
    for label, rgb in table.items():
        assert tuple(map(int, rgb.split(", "))) == label_color(label), label
    assert len(table) == 8


def test_a_timeline_says_what_it_plots_and_keeps_certain_curves_off_the_frame():
    from fer8.pipeline.timeline import Timeline
    from fer8.results import Box, FrameResult, TrackedFace

    labels = ("happy", "neutral")
    timeline = Timeline(labels)
    for i, p in enumerate([1.0, 1.0, 0.4]):
        face = TrackedFace(Box(0, 0, 10, 10), "happy", p, {"happy": p, "neutral": 1 - p}, track=3)
        timeline.add(FrameResult("clip.mp4", (face,), None, frame=i, time=i * 0.2))
    figure = timeline.figure(title="clip.mp4")
    (axis,) = figure.axes
    assert axis.get_ylabel() == "probability"
    assert axis.get_title(loc="left") == "face #3"
    low, high = axis.get_ylim()
    assert low < 0 and high > 1.0  # a curve at 1.0 (or 0) is not drawn on the frame
    assert figure._suptitle.get_text() == "clip.mp4"
    colours = [line.get_color() for line in axis.get_lines()]
    assert len(set(colours)) == 2
