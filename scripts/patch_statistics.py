"""Rule patch_statistics: the exact patch basis of one (dataset, preprocessing, k, c)."""

from pathlib import Path

import torch

from firstlayer_zoo.dataset_sources.base import prepared_indices
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.patchstats import source_basis
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    # Parallel over batches (PatchMoments threads), not within each small op.
    torch.set_num_threads(1)
    wildcards = snakemake.wildcards
    preprocessing = Preprocessing.from_dict(snakemake.params.preprocessing)
    if preprocessing.in_chans != int(wildcards.c):
        raise ValueError(f"preprocessing {wildcards.prep} has {preprocessing.in_chans} channels, not {wildcards.c}")
    source = dataset_source(wildcards.dataset, snakemake.params.options)
    basis = source_basis(
        source,
        Path(snakemake.params.root),
        preprocessing,
        int(wildcards.k),
        device=snakemake.params.device,
        # Decoding workers feed the GEMM threads; on a GPU the threads matter little.
        workers=snakemake.threads - 1,
        threads=snakemake.threads,
        meta={"dataset": wildcards.dataset},
        offsets=snakemake.params.autocorrelation_offsets,
        second_moment=snakemake.params.moments,
        indices=prepared_indices(snakemake.input[0]),
    )
    basis.save(snakemake.output[0])
    print(f"{basis.n_patches} patches from {basis.n_images} images; "
          f"eigenvalues {basis.eigenvalues[0]:.4g} .. {basis.eigenvalues[-1]:.4g}")
