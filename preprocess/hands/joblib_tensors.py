"""Read a joblib pickle of torch tensors and numpy arrays without joblib and without arbitrary unpickling.

HaWoR saves `world_space_res.pth` with `joblib.dump` (not `torch.save`, so `torch.load` cannot read it):
a pickle stream in which each numpy array is a `joblib.numpy_pickle.NumpyArrayWrapper` followed directly
by the array's bytes (a padding-length byte and padding when the wrapper says so, then the data in its
order), and each torch tensor is `torch._utils._rebuild_tensor_v2` over a storage pickled as bytes of the
legacy `torch.save` format. Only those, plain containers and numpy dtypes are admitted; storages are loaded
with `torch.load(weights_only=True)`. Object arrays are refused.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np


class JoblibReadError(pickle.UnpicklingError):
    """The file holds something other than tensors, numeric arrays and plain containers."""


class _ArrayWrapper:
    """Stand-in for joblib's NumpyArrayWrapper: the pickled state says how to read the bytes that follow."""

    def read(self, stream) -> np.ndarray:
        s = self.__dict__
        dtype = np.dtype(s["dtype"])
        if dtype.hasobject:
            raise JoblibReadError("object arrays are not read")
        if s.get("numpy_array_alignment_bytes") is not None:
            stream.read(stream.read(1)[0])  # one byte giving the padding length, then the padding
        shape = tuple(int(x) for x in s["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        data = stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise JoblibReadError("file ends inside an array")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if s.get("order", "C") == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)


def _load_storage(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


class _Unpickler(pickle._Unpickler):  # the pure-Python unpickler: its BUILD step can be extended
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
            return _ArrayWrapper
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_storage
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            import torch._utils

            return torch._utils._rebuild_tensor_v2
        if (module, name) in {("collections", "OrderedDict"), ("numpy", "dtype"), ("numpy", "ndarray"),
                              ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                              ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}:
            return super().find_class(module, name)
        raise JoblibReadError(f"refusing to load {module}.{name}: only tensors and numeric arrays are read")

    def load_build(self):
        super().load_build()
        if isinstance(self.stack[-1], _ArrayWrapper):
            self.stack.append(self.stack.pop().read(self._file))

    dispatch[pickle.BUILD[0]] = load_build

    def __init__(self, file):
        super().__init__(file)
        self._file = file


def load(path: str | Path):
    """The object in a joblib file (uncompressed), tensors and arrays included."""
    with open(path, "rb") as f:
        try:
            return _Unpickler(f).load()
        except (EOFError, ValueError, KeyError, AttributeError, TypeError, IndexError) as e:
            raise JoblibReadError(f"{path}: not a readable joblib file ({type(e).__name__}: {e})") from None
