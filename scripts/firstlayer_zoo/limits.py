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
import math
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
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
    # c*k*k of the largest patch basis a stem may plan (timm's largest stems have 3,072: 3x32x32).
    basis_dimensions: int = 4096

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"limits.{field.name}: {value!r} is not a finite positive number; give one "
                                 f"(the default is {field.default})")

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
