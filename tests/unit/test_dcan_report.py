"""DCAN's tables, coloured masks and figures."""

import numpy as np
import pytest
import torch
from PIL import Image

from frugalcv.sharding.sources._common import CITYSCAPES_CLASSES
from frugalcv.workflows.dcan.metrics import SYNTHIA_16
from frugalcv.workflows.dcan.palette import CITYSCAPES_PALETTE, colorize
from frugalcv.workflows.dcan.report import (
    iou_table,
    plot_predictions,
    plot_translations,
    summary_table,
    write_report,
)

SOURCE_ONLY = {"miou": 0.2913, "pixel_accuracy": 0.7, "iou_road": 0.714, "iou_traffic_light": 0.05}
DCAN = {"miou": 0.36214, "pixel_accuracy": 0.8, "iou_road": 0.852, "iou_traffic_light": 0.2966}


def test_iou_table_layout():
    text = iou_table([("Source only", SOURCE_ONLY), ("DCAN", DCAN)], CITYSCAPES_CLASSES, range(19))
    head, rule, *rows = text.splitlines()
    assert head == ("| Method | road | sidewalk | building | wall | fence | pole | light | sign | veg | terrain "
                    "| sky | person | rider | car | truck | bus | train | mbike | bike | mIoU |")
    assert rule.count("|") == head.count("|")
    assert len(rows) == 2
    assert rows[0].startswith("| Source only | 71.4 | – |") and rows[0].endswith("| 29.1 |")
    assert rows[1].startswith("| DCAN | 85.2 | – |") and "| 29.7 |" in rows[1] and rows[1].endswith("| 36.2 |")


def test_iou_table_keeps_only_the_evaluated_classes():
    head = iou_table([("DCAN", DCAN)], CITYSCAPES_CLASSES, SYNTHIA_16).splitlines()[0]
    assert "terrain" not in head and "truck" not in head and "| train |" not in head
    assert head.count("|") == 16 + 3


def test_summary_table_gain_over_the_first_row():
    rows = summary_table([("Source only", SOURCE_ONLY), ("DCAN", DCAN)]).splitlines()[2:]
    assert rows == ["| Source only | 29.1 | 70.0 | – |", "| DCAN | 36.2 | 80.0 | +7.1 |"]


def test_colorize_maps_ids_to_the_palette_and_ignore_to_black():
    mask = torch.tensor([[0, 13, 255], [18, 10, 255]])
    rgb = colorize(mask)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert [tuple(p) for p in rgb.reshape(-1, 3)] == [
        (128, 64, 128), (0, 0, 142), (0, 0, 0), (119, 11, 32), (70, 130, 180), (0, 0, 0)]
    assert len(CITYSCAPES_PALETTE) == 19
    assert np.array_equal(colorize(mask.numpy().astype(np.uint8)), rgb)


def _png_size(path):
    with Image.open(path) as im:
        return im.size  # (width, height)


def test_plot_translations_rows_of_three(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (32, 64, 3), dtype=np.uint8) for _ in range(2)]
    path = plot_translations(imgs, imgs, imgs, str(tmp_path / "t.png"))
    w, h = _png_size(path)
    # 3 columns of 2:1 cells over 2 rows, plus a title strip
    assert w / h == pytest.approx(3 * 2 / 2, rel=0.15)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        plot_translations([imgs[0].transpose(2, 0, 1)], imgs[:1], imgs[:1], str(tmp_path / "bad.png"))


def test_plot_predictions_one_column_per_method(tmp_path):
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    mask = np.full((40, 40), 255, dtype=np.uint8)
    mask[:20] = 0
    path = plot_predictions([image], [mask], {"Source only": [mask], "DCAN": [torch.from_numpy(mask)]},
                            str(tmp_path / "p.png"))
    w, h = _png_size(path)
    assert w / h == pytest.approx(4 / 1, rel=0.15)  # image | gt | 2 methods, one square row
    with pytest.raises(ValueError, match="same, non-zero number"):
        plot_predictions([image], [mask], {"DCAN": []}, str(tmp_path / "bad.png"))


def test_write_report_sections_and_links(tmp_path):
    fig = plot_translations([np.zeros((8, 8, 3), np.uint8)] * 1, [np.zeros((8, 8, 3), np.uint8)],
                            [np.zeros((8, 8, 3), np.uint8)], str(tmp_path / "translations.png"))
    path = write_report(str(tmp_path), title="DCAN GTA5 → Cityscapes",
                        tables=[("Summary", summary_table([("DCAN", DCAN)]))], figures=[fig])
    with open(path) as f:
        text = f.read()
    assert path == str(tmp_path / "report.md")
    assert text.startswith("# DCAN GTA5 → Cityscapes\n\n## Summary\n\n| Method |")
    assert "## Figures\n\n![translations.png](translations.png)" in text
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_report(str(tmp_path), title="t", tables=[], figures=["missing.png"])
