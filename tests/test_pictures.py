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
        figures.append((figure._suptitle.get_text() if figure._suptitle else "",
                        [axis.get_title() for axis in figure.axes]))
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
