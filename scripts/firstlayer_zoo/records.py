"""Small records passed between the planner, the rules and the tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .preprocessing import Preprocessing


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
