"""Rule analyse_checkpoints' work: read and profile every checkpoint of one shard.

Apart from shards.py (which planning and the tables import) because it reaches
the zoo sources, and so torch, timm and the readers of every checkpoint format.
"""

from __future__ import annotations

import traceback
from typing import Sequence

from .analysis import CheckpointAnalysis, analyse_stem, require_ok, skipped_analysis
from .basis import PatchBasis
from .downloads import DownloadError
from .records import CheckpointSpec, FieldError
from . import zoo_sources


def analyse_shard(specs: Sequence[CheckpointSpec], basis_paths: dict[str, str], subtract_init: bool,
                  strict: bool, progress: bool = True) -> list[CheckpointAnalysis]:
    """Read and analyse every checkpoint of one shard; one that cannot be read never costs the others theirs.

    Under `strict`, the first checkpoint that cannot be analysed fails the job, naming it.
    """
    from tqdm import tqdm

    kernel_sizes = {spec.basis.slug: spec.basis.kernel_size for spec in specs if spec.basis is not None}
    bases = {slug: PatchBasis.load(path, kernel_sizes[slug]) for slug, path in basis_paths.items()}
    analyses = []
    for spec in tqdm(specs, desc="checkpoints", unit="ckpt", disable=not progress, mininterval=2):
        try:
            stem = zoo_sources.extract_stem(spec)
            analysis = analyse_stem(spec, stem, bases.get(spec.basis.slug) if spec.basis else None, subtract_init)
        except (DownloadError, FieldError):
            # A download may work next time: the shard's job fails (naming the URL), no skipped row is kept.
            # A field its source did not declare is the source's bug: the job fails naming the field.
            raise
        except Exception as error:  # noqa: BLE001 - the one place a checkpoint's failure must stay its own
            # The message of an unforeseen error may quote the file's bytes: the log gets the traceback,
            # the table only the error's type.
            traceback.print_exc()
            analysis = skipped_analysis(
                spec, f"skipped: {spec.uri}: reading it failed unexpectedly ({type(error).__name__}); "
                      "the job's log has the details")
        print(f"{spec.id}: {analysis.status}", flush=True)
        if strict:
            require_ok(spec, analysis.status)
        analyses.append(analysis)
    return analyses
