"""docs/pipeline-reference.md is generated from the code; it must match what the code generates now."""

from pathlib import Path

from frugalcv.workflows.pipeline import reference
from frugalcv.workflows.pipeline.stages import registered_stages

DOC = Path(__file__).resolve().parents[2] / "docs" / "pipeline-reference.md"


def test_the_generated_reference_is_up_to_date():
    assert DOC.read_text() == reference.render(), (
        "docs/pipeline-reference.md is stale: run `python -m frugalcv.workflows.pipeline.reference "
        "docs/pipeline-reference.md`")


def test_the_reference_lists_every_builtin_stage_and_its_params():
    text = reference.render()
    for name in registered_stages():
        if name.startswith(("blockdrop.", "shard")):
            assert f"`uses: {name}`" in text
    assert "| `lr_schedule` |" in text and "| `checkpoint_every` |" in text


def test_field_comments_come_from_the_source():
    from frugalcv.workflows.pipeline.config import StageConfig

    notes = reference.field_comments(StageConfig)
    assert notes["num_workers"].startswith("loader worker processes per rank")
