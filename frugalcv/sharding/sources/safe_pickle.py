"""Pickles as untrusted input: an unpickler that builds only plain data and numpy arrays.

A dataset folder is data, yet a pickle can name any importable callable and run it while it
loads. ``load`` admits only Python's plain containers, numbers, strings and bytes (which need no
globals) and the few numpy globals an array's pickle names; anything else is refused with a
``FrugalError`` naming the file, before it is called.
"""

from __future__ import annotations

import io
import pickle

from frugalcv.errors import FrugalError

#: (module, name) of every global an array or a numpy scalar pickles through (numpy 1 and 2)
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    # protocol 2 written by Python 3 stores bytes as _codecs.encode(text, "latin1")
    ("_codecs", "encode"),
})


class _Refused(pickle.UnpicklingError):
    pass


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"refers to {module}.{name}, which a dataset file may not")


def load(data: bytes, where: str, *, encoding: str = "bytes"):
    """Unpickle ``data`` (from ``where``, named in errors) admitting only plain data and numpy arrays."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data), encoding=encoding).load()
    except _Refused as e:
        raise FrugalError(f"{where}: refused: the pickle {e}; only plain data and numpy arrays are read") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError, ImportError) as e:
        raise FrugalError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None
