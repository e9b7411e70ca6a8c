"""Users browse frugalcv runs in the MLflow UI: a real `mlflow server` on 127.0.0.1 holding a
finished smoke run of the shipped demo, opened in headless Chromium (Debian's /usr/bin/chromium,
driven by playwright). Screenshots go to $FRUGALCV_TEST_ARTIFACTS (default: the test's tmp dir)."""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_server import mlflow_server
from realparts import skip_or_fail

from frugalcv.workflows.pipeline import runner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "pipelines" / "blockdrop-demo.yaml"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STAGES = ("digits", "pretrain", "curriculum", "finetune", "evaluate")
#: MLflow 3.17's UI picks GenAI or model-training views from this query parameter (else its own
#: default, GenAI); frugalcv's URLs carry it
ML = "workflowType=machine_learning"
TIMEOUT_MS = 60_000


def _browser_parts() -> None:
    if not os.path.exists(CHROMIUM):
        skip_or_fail(f"{CHROMIUM} is missing (apt-get install -y chromium; scripts/system-deps.sh does it)")
    if importlib.util.find_spec("playwright") is None:
        skip_or_fail("python package playwright is missing (pip install playwright; it is in the dev extra)")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """(server URL, pipeline run id, status) of a finished `frugalcv run blockdrop-demo.yaml --smoke`."""
    _browser_parts()
    folder = tmp_path_factory.mktemp("browser")
    with mlflow_server(folder / "server") as url:
        root = folder / "runs"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "frugalcv.cli", "run", str(DEMO), "--smoke",
                              "-o", f"storage.root={root}", "-o", f"tracking.uri={url}"],
                             capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        print(f"demo smoke run tracked to {url} in {time.monotonic() - t0:.0f}s")
        rid = runner.resolve_run_id("latest", str(root))
        yield url, rid, runner.status(rid, str(root))


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("FRUGALCV_TEST_ARTIFACTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shot(page, folder: Path, name: str, saved: list[str]) -> None:
    path = folder / f"{len(saved) + 1:02d}-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    saved.append(str(path))
    print(f"screenshot {path}")


def browse(page, url: str, rid: str, st: dict, folder: Path) -> list[str]:
    """Walk the UI as a user would; returns the screenshot paths."""
    saved: list[str] = []
    stage_runs = {s["stage"]: s["mlflow_run_id"] for s in st["stages"]}
    exp = MlflowClient(url).get_experiment_by_name(st["mlflow"]["experiment"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    # the experiment opens on its runs: the pipeline's parent run, then its stage children
    page.goto(f"{url}/#/experiments/{exp.experiment_id}?{ML}")
    parent = page.locator("[role=row]", has_text=f"blockdrop-demo {rid}").first
    parent.wait_for(timeout=TIMEOUT_MS)
    assert f"/experiments/{exp.experiment_id}/runs" in page.url
    close = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():  # MLflow's assistant side panel: not what this is about
        close.first.click()
    _shot(page, folder, "experiment-runs", saved)
    parent.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for stage in STAGES:
        page.locator("[role=row] a", has_text=stage).first.wait_for(timeout=TIMEOUT_MS)
    _shot(page, folder, "pipeline-run-and-stages", saved)

    # the evaluate stage's run: its lineage tags
    page.locator("[role=row] a", has_text="evaluate").first.click()
    page.get_by_text("frugalcv.fingerprint").first.wait_for(timeout=TIMEOUT_MS)
    assert stage_runs["evaluate"] in page.url
    more = page.get_by_role("button", name="+")  # tags beyond the first few are folded
    if more.count():
        more.first.click()
    body = page.inner_text("body")
    evaluate = next(s for s in st["stages"] if s["stage"] == "evaluate")
    for text in ("frugalcv.pipeline_run", "frugalcv.parent_stage_runs", evaluate["fingerprint"][:20]):
        assert text in body, text
    _shot(page, folder, "evaluate-run-lineage", saved)

    # its report, rendered with its figures, and a figure on its own
    page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs/{stage_runs['evaluate']}/artifacts/report/report.html?{ML}")
    frame = _report_frame(page)
    widths = frame.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
    assert len(widths) == 3 and all(w > 0 for w in widths), widths
    assert "Heuristic baselines" in frame.inner_text("body")
    _shot(page, folder, "evaluate-report-html", saved)
    page.locator("text=accuracy_vs_flops.png").first.click()
    # MLflow's image viewer shows the artifact from a blob: URL
    page.wait_for_function("Array.from(document.images).some(i => i.src.startsWith('blob:') && i.complete "
                           "&& i.naturalWidth > 0 && i.getBoundingClientRect().width > 0)", timeout=TIMEOUT_MS)
    assert page.get_by_text("report/accuracy_vs_flops.png").count()
    _shot(page, folder, "evaluate-figure", saved)

    # the registered model's version, pointing back at the runs and the checkpoint
    model = st["mlflow"]["registered_model"]
    page.goto(f"{url}/#/models/{model['name']}/versions/{model['version']}?{ML}")
    page.get_by_text("frugalcv.checkpoint.sha256").first.wait_for(timeout=TIMEOUT_MS)
    body = page.inner_text("body")
    for text in (model["sha256"], stage_runs["finetune"], rid, st["mlflow"]["parent_run_id"], "finetune/model.pt"):
        assert text in body, text
    _shot(page, folder, "registered-model-version", saved)
    page.goto(f"{url}/#/models/{model['name']}?{ML}")
    page.get_by_text(f"Version {model['version']}").first.wait_for(timeout=TIMEOUT_MS)
    _shot(page, folder, "registered-model", saved)
    return saved


def _report_frame(page):
    """The frame MLflow shows an HTML artifact in, once its images have loaded."""
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        for frame in page.frames:
            if frame is page.main_frame:
                continue
            try:
                if frame.evaluate("document.images.length > 0 && Array.from(document.images).every(i => i.complete)"):
                    return frame
            except Exception:  # a frame still navigating
                pass
        page.wait_for_timeout(250)
    raise AssertionError("no frame with the report's loaded images")


def test_demo_run_browsable_in_the_mlflow_ui(demo_run, shots, tmp_path):
    from playwright.sync_api import sync_playwright

    url, rid, st = demo_run
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            saved = browse(page, url, rid, st, shots)
        except Exception:
            context.pages[-1].screenshot(path=str(shots / "failure.png"))
            print(f"screenshot {shots / 'failure.png'}")
            raise
        finally:
            context.close()
    assert len(saved) == 7 and all(Path(p).stat().st_size > 10_000 for p in saved)
