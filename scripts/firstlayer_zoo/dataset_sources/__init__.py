"""Every dataset source, registered in DATASET_SOURCES on import, and the dataset's preparation.

A new source is one module here that subclasses base.DatasetSource
and decorates it with `@register` (every module of this package is imported
below), and its block in workflow/schemas/config.schema.yaml
(tests/test_sources.py checks the names match).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from .base import DATASET_SOURCES, DatasetSource
from ..registry import import_modules

import_modules(__name__, __path__)


def dataset_source(name: str, options: dict) -> DatasetSource:
    try:
        cls = DATASET_SOURCES[options["source"]]
    except KeyError:
        raise ValueError(
            f"dataset {name!r}: unknown source {options.get('source')!r}; "
            f"choose one of {sorted(DATASET_SOURCES)}"
        ) from None
    return cls(name, options)


def prepare_dataset(name: str, options: dict, root: str | Path, manifest: str | Path) -> dict:
    """Prepare a dataset and write its manifest atomically: no manifest unless preparation succeeded."""
    description = dataset_source(name, options).prepare(Path(root))
    write_text(manifest, json.dumps(description, indent=1, sort_keys=True))
    return description

