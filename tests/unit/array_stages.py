"""A fake array stage for the runner tests; only frugalcv imports, so local child processes can load it."""

import os

from frugalcv.workflows.pipeline.stages import StageResult, register_stage


@register_stage("fake.parts", replace=True, array_tasks=lambda params: int(params.get("tasks", 1)))
def fake_parts(ctx):
    """Task i writes part-i.txt; the final step joins the parts (and fails when one is missing)."""
    if ctx.array is not None and not ctx.array.is_final:
        if ctx.array.index == ctx.param("fail_task", -1):
            raise RuntimeError(f"task {ctx.array.index} fails on purpose")
        with open(ctx.path(f"part-{ctx.array.index}.txt"), "w") as f:
            f.write(f"{ctx.array.index} pid {os.getpid()}\n")
        return StageResult()
    count = ctx.array.count if ctx.array else 1
    parts = []
    for i in range(count if ctx.array else 0):
        with open(ctx.path(f"part-{i}.txt")) as f:
            parts.append(f.read().split()[0])
    parts = parts or ["0"]
    path = ctx.path("joined.txt")
    with open(path, "w") as f:
        f.write(",".join(parts) + "\n")
    return StageResult(metrics={"parts": len(parts)}, outputs={"data": path})
