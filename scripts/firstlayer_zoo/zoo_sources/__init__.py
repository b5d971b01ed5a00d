"""Every zoo source, registered in ZOO_SOURCES on import, and the dispatch from a spec to its source's reader.

A new source is one module here that subclasses base.ZooSource and
decorates it with `@register` (every module of this package is imported
below), and its block in workflow/schemas/config.schema.yaml
(tests/test_sources.py checks that the schema's `source` names equal the
registry's).
"""

from __future__ import annotations

from ..downloads import DownloadError
from ..records import CheckpointSpec, FieldError
from ..registry import import_modules
from ..stems import Stem, StemError
from .base import ZOO_SOURCES

import_modules(__name__, __path__)


def extract_stem(spec: CheckpointSpec) -> Stem:
    """The stem of one checkpoint (in RGB channel order), or a skipped Stem saying why it cannot be analysed.

    Whatever one checkpoint's bytes do to the readers becomes its skipped
    reason; only a failed download (a rerun may succeed), a field the source
    did not declare (records.FieldError, a bug) and interrupts escape.
    A checkpoint refused at planning is not read at all.
    """
    source = ZOO_SOURCES[spec.source]
    source.check_spec(spec)
    if spec.refused:
        return Stem.skipped(spec.refused, spec.first_conv)
    # Said before reading: if the file is rewritten under a memory map, the job dies of SIGBUS, and this line
    # (with faulthandler's trace, see rule_io.logged) is what names the file in its log.
    print(f"{spec.id}: reading {spec.uri}", flush=True)
    try:
        stem = source.check_stem(spec, source.load_stem(spec))
        return stem.in_rgb_order(spec.uri) if spec.channel_order == "bgr" else stem
    except StemError as error:
        reason = str(error)
    except (DownloadError, FieldError):
        raise
    except Exception as error:  # noqa: BLE001 - one checkpoint's bytes must never stop the study
        reason = unreadable_reason(spec.uri, error)
    return Stem.skipped(reason, spec.first_conv)


def unreadable_reason(uri: str, error: Exception) -> str:
    """What to do about a failure no reader anticipated; the exception's text is left out, as it may quote the file."""
    if isinstance(error, PermissionError):
        return f"{uri} (or its init): permission denied; make it readable (chmod a+r) or remove it from the zoo"
    if isinstance(error, OSError):
        return f"{uri} (or its init): cannot be read ({error.strerror or type(error).__name__}); check the file"
    if isinstance(error, RecursionError):
        return f"{uri}: nested too deeply to parse (a corrupt or hostile file); fetch or export it again"
    if isinstance(error, MemoryError):
        return f"{uri}: claims sizes too large to read into memory (corrupt?); fetch or export it again"
    return (f"{uri}: unreadable ({type(error).__name__} while reading it), not a checkpoint this workflow can "
            "analyse; fetch or export it again")


def fetch_checkpoint(spec: CheckpointSpec) -> dict:
    """Download what a remote checkpoint is read from into its cache; a checkpoint that cannot be read says why."""
    try:
        return ZOO_SOURCES[spec.source].fetch(spec)
    except StemError as error:
        return {"fetched": None, "why": str(error)}

