"""Small records passed between the planner, the rules and the tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

from .preprocessing import Preprocessing


class FieldError(TypeError):
    """A zoo source wrote a field it did not declare, or one of another type than declared: a bug in the source,
    which fails its job rather than becoming one checkpoint's `skipped:` row."""


def is_kind(value: object, kind: type) -> bool:
    """Whether a field's value has its declared kind; None (unknown) always does, an int is a float, a bool is
    neither an int nor a float."""
    if value is None:
        return True
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def check_fields(where: str, declared: Mapping[str, type], values: Mapping) -> None:
    """Refuse a field of `values` that `declared` does not name, or whose value is not of its declared kind."""
    for name, value in values.items():
        if name not in declared:
            raise FieldError(f"{where} wrote the field {name!r}, which it does not declare ({sorted(declared)}); "
                             "declare it, with its type, or stop writing it")
        if not is_kind(value, declared[name]):
            raise FieldError(f"{where} wrote {name!r} as {type(value).__name__}, declared "
                             f"{declared[name].__name__}; fix the source or its declaration")


@dataclass(frozen=True)
class BasisKey:
    dataset: str
    preprocessing: str
    kernel_size: int
    in_chans: int

    @property
    def slug(self) -> str:
        return f"{self.dataset}-{self.preprocessing}-k{self.kernel_size}c{self.in_chans}"


@dataclass(frozen=True)
class CheckpointSpec:
    """What is known about a checkpoint before any of its bytes are read."""

    zoo: str
    name: str
    source: str
    arch: str | None  # None where the source does not know it, like step, seed and labels
    # What the source's reader opens: a file's path, a URL, a Hugging Face Hub repository id, a torch.hub entry.
    locator: str
    first_conv: str
    kernel_size: int
    in_chans: int
    dataset: str
    preprocessing: Preprocessing
    init_locator: str | None = None  # the initialisation's, where known
    stride: int | None = None  # the stem's, where known before reading it
    # Where the checkpoint comes from, for people (the tables' uri), where the locator alone does not say it.
    label: str | None = None
    step: int | None = None
    seed: int | None = None
    labels: str | None = None
    run: str | None = None
    # The source's own fields (what its reader needs, what it knows of the checkpoint), each declared with its type
    # in its ZooSource.spec_fields; checked at planning and before the checkpoint is read.
    extra: dict = field(default_factory=dict)
    # The order the model takes colour channels in; "bgr" stems are read as the RGB stem they equal.
    channel_order: str = "rgb"
    # Why planning found it cannot be analysed (its declared stem does not fit the data, ...): its job writes
    # this as its `skipped:` row without reading the file, and no basis is planned for it.
    refused: str | None = None

    @property
    def id(self) -> str:
        return f"{self.zoo}/{self.name}"

    @property
    def uri(self) -> str:
        """Where the checkpoint comes from, as messages and the tables name it."""
        return self.label or self.locator

    @property
    def basis(self) -> BasisKey | None:
        """None when no patch basis fits: geometry unreadable at planning, a 1x1 stem, channels unlike the data's,
        or a stem refused at planning.

        Such a checkpoint is still planned; its profile job writes a `skipped:` row saying why.
        """
        if self.refused or self.kernel_size < 2 or self.in_chans != self.preprocessing.in_chans:
            return None
        return BasisKey(self.dataset, self.preprocessing.key, self.kernel_size, self.in_chans)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["preprocessing"] = self.preprocessing.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "CheckpointSpec":
        values = dict(values)
        values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        return cls(**values)
