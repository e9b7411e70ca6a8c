"""What a stage's run shows: its figures and reports (a Markdown report also as HTML), its training curves."""

import logging

from frugalcv.workflows.engine.curves import plot_training_curves
from frugalcv.workflows.pipeline.entry import _log_artifacts


class RecordingTracker:
    def __init__(self):
        self.logged: list[tuple[str, str | None]] = []

    def log_artifact(self, path, artifact_path=None, run_id=None):
        self.logged.append((path, artifact_path))


def test_stage_artifacts_logged_in_their_folders_with_an_html_report(tmp_path, caplog):
    plot = plot_training_curves([{"step": 1, "epoch": 0, "loss": 2.0, "acc": 0.1},
                                 {"step": 2, "epoch": 0, "loss": 1.5, "acc": float("nan")}],
                                str(tmp_path / "curves.png"), "train")
    (tmp_path / "report.md").write_text("# R\n\n![curves.png](curves.png)\n")
    t = RecordingTracker()
    with caplog.at_level(logging.WARNING):
        _log_artifacts(t, {"report": [str(tmp_path / "report.md"), plot, str(tmp_path / "gone.png")],
                           "figures": [plot]})
    names = [(p.rsplit("/", 1)[-1], folder) for p, folder in t.logged]
    assert names == [("report.md", "report"), ("curves.png", "report"), ("report.html", "report"),
                     ("curves.png", "figures")]
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    assert "gone.png does not exist" in caplog.text


def test_training_curves_need_something_logged(tmp_path):
    assert plot_training_curves([], str(tmp_path / "a.png")) is None
    assert plot_training_curves([{"step": 1, "epoch": 0}], str(tmp_path / "b.png")) is None
    assert plot_training_curves([{"step": 1, "epoch": 0, "loss": 1.0}], str(tmp_path / "c.png")) == str(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
