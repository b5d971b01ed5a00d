"""Outputs appear under their final name only once complete.

Also the one .npz layout (arrays and a JSON header, read without pickle) that
bases (basis.py) and shard analyses (shards.py) are written in.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only read by setting)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place on success, delete it on failure."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    # mkstemp makes the file 0600; outputs get what an ordinary write would, so collaborators can read them.
    os.fchmod(handle, 0o666 & ~current_umask())
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: str | Path, header: dict, **arrays) -> None:
    """Arrays plus a JSON header in one .npz, written atomically; read back without pickle."""
    import json

    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, header=np.array(json.dumps(header, sort_keys=True)), **arrays)


def read_npz(path: str | Path, skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(header, arrays) of a file written by write_npz; the arrays named in `skip` are not read at all."""
    import json

    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != "header" and name not in skip}
        return json.loads(str(data["header"])), arrays
