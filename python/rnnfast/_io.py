"""Model files: one .npz archive holding a format tag, a version, a JSON configuration and the
parameters, written and read without pickle (``allow_pickle=False``), so loading a file never runs
code from it. Used by the layers and by Seq2Seq."""

from __future__ import annotations

import json
import zipfile
import zlib
from typing import Any

import numpy as np

__all__ = ["save_npz", "load_npz"]


def save_npz(path: Any, fmt: str, version: int, config: dict[str, Any],
             params: dict[str, np.ndarray]) -> None:
    """Write ``config`` (JSON-able) and ``params`` to ``path``, tagged with ``fmt`` and ``version``."""
    arrays = {"__format__": np.array(fmt), "__version__": np.array(version),
              "__config__": np.array(json.dumps(config))}
    arrays.update({f"param/{name}": p for name, p in params.items()})
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)


def load_npz(path: Any, fmt: str, version: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, params) from a file written by ``save_npz`` with the same ``fmt`` and ``version``.

    Anything else (another format, a truncated or corrupt archive, a plain .npy, pickled objects)
    raises ValueError naming the file; a missing file stays FileNotFoundError.
    """
    try:
        # Our own handle: np.load leaks the one it opens when the zip archive is unreadable
        # (a ResourceWarning, an error under pytest's warnings-as-errors).
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with loaded as npz:
                if "__format__" not in npz.files:
                    raise ValueError("no '__format__' entry: not an rnnfast model file")
                if str(npz["__format__"]) != fmt:
                    raise ValueError(f"format {str(npz['__format__'])!r}, expected {fmt!r}")
                if int(npz["__version__"]) != version:
                    raise ValueError(f"format version {int(npz['__version__'])}, this rnnfast "
                                     f"reads {version}")
                config = json.loads(str(npz["__config__"]))
                if not isinstance(config, dict):
                    raise ValueError(f"configuration {config!r} is not a mapping")
                params = {key[len("param/"):]: npz[key] for key in npz.files
                          if key.startswith("param/")}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, TypeError, KeyError, OSError, EOFError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{path}: not a readable rnnfast {fmt} file ({err})") from err
    return config, params
