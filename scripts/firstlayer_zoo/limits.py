"""Bounds on what a zoo's files may make the workflow read, download or unpack (config key `limits`).

A hostile or broken file can claim a header of gigabytes, a zip can expand a
thousandfold, a server can stream without end. Every reader checks the claim
against these bounds before acting on it and refuses past them, naming the
config key that raises the bound.

A job that reads checkpoints gets the study's limits as a rule param and
wraps its work in `applied`, which makes them the current ones for the
readers below it (planning does the same with the config's). prepare_dataset
applies the config's limits the same way, read from the config rather than a
param, so that raising a limit does not redo every dataset and basis.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Iterator

MB = 1 << 20
GB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Defaults match workflow/schemas/config.schema.yaml (`limits`)."""

    safetensors_header_mb: float = 16
    download_gb: float = 50
    download_minutes: float = 120
    archive_unpacked_gb: float = 100
    archive_expansion_ratio: float = 200

    @property
    def header_bytes(self) -> int:
        return int(self.safetensors_header_mb * MB)

    @property
    def download_bytes(self) -> int:
        return int(self.download_gb * GB)

    @property
    def archive_bytes(self) -> int:
        return int(self.archive_unpacked_gb * GB)

    @classmethod
    def from_dict(cls, values: dict | None) -> "Limits":
        return cls(**(values or {}))

    def to_dict(self) -> dict:
        return asdict(self)


_CURRENT: ContextVar[Limits] = ContextVar("limits", default=Limits())


def current() -> Limits:
    return _CURRENT.get()


@contextlib.contextmanager
def applied(limits: Limits) -> Iterator[Limits]:
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)


class LimitExceeded(ValueError):
    """An input larger than a configured limit; the message names the limit's config key."""


def refuse_over(what: str, size: int, limit: int, key: str, error: type[Exception] = LimitExceeded) -> None:
    if size > limit:
        raise error(
            f"{what} is {size:,} bytes, over the limit of {limit:,} (limits.{key}); "
            f"raise limits.{key} in the config if you trust it")
