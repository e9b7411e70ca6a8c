"""A local folder for files a stage writes with ordinary file APIs (reports, plots), wherever its
output folder is: the output folder itself when it is local, else a temporary folder whose files
are uploaded to the output folder (any fsspec URL) when the block ends without an error."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from frugalcv.sharding import storage


@contextlib.contextmanager
def local_outputs(ctx) -> Iterator[str]:
    """``with local_outputs(ctx) as folder:`` write ``folder/name``; it ends up at ``ctx.path(name)``."""
    if storage.is_local(ctx.output_dir):
        folder = storage.url_to_fs(ctx.output_dir)[1]
        os.makedirs(folder, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="frugalcv-outputs-") as folder:
        yield folder
        for base, _, files in os.walk(folder):
            for name in sorted(files):
                path = os.path.join(base, name)
                relative = os.path.relpath(path, folder).replace(os.sep, "/")
                with open(path, "rb") as f:
                    storage.write_bytes_atomic(ctx.path(relative), f.read())
