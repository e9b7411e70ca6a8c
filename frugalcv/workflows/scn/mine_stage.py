"""``scn.mine``: patch pairs of a Pascal VOC folder (``voc-pairs`` shards), as one job or a job array.

The stage is the ``shard`` stage's body with kind ``voc-pairs`` and typed mining params: the pairs
themselves are chosen and encoded in ``frugalcv.sharding.sources.voc_pairs`` / ``patch_pairs``.
"""

from __future__ import annotations

from frugalcv.sharding.sources.voc_pairs import VocPairsSource
from frugalcv.workflows import kit
from frugalcv.workflows.scn.mine_params import MineParams


def mine_tasks(params: MineParams) -> int:
    """How many array tasks the stage runs as (``params.tasks``)."""
    return params.tasks


def mine_outputs(params: MineParams) -> list[str]:
    """One output per split mined."""
    return list(params.splits)


@kit.register_stage("scn.mine", params=MineParams, array_tasks=mine_tasks, outputs=mine_outputs)
def mine_stage(ctx: kit.StageContext) -> kit.StageResult:
    """Patch pairs (X_i, X_j, o_ij) of the VOC images of each split -> `patch_pairs` shards at
    `<dst>/<split>` (outputs named by split): `a.png`, `b.png`, `offset.npy` (float32 [8], the corner
    offsets over the image size), `pair.json`, and `a.cls` / `b.cls` with `pairs: gt`. `pairs` takes the
    boxes from the annotations (`gt`), a proposals file (`proposals`, CSV `image_id,x1,y1,x2,y2,score`)
    or random squares (`random`). `tasks: N` runs N array tasks over disjoint shard ranges
    (byte-identical to one task); a rerun writes only the missing shards."""
    p: MineParams = ctx.params
    return kit.shard_splits(ctx, VocPairsSource.kind, p.src, p.dst or ctx.path("pairs"), list(p.splits),
                            options=p.options(), max_shard_samples=p.max_shard_samples, workers=p.workers,
                            name="scn.mine")
