"""Rule patch_statistics: the exact patch basis of one (dataset, preprocessing, k, c)."""

from pathlib import Path

import torch

from firstlayer_zoo.datasets import dataset_source
from firstlayer_zoo.patchstats import source_basis
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
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
        decode=snakemake.params.decode,
        # The main process runs the GEMMs; the other threads decode images.
        workers=snakemake.threads - 1,
        meta={"dataset": wildcards.dataset},
    )
    basis.save(snakemake.output[0])
    print(f"{basis.n_patches} patches from {basis.n_images} images; "
          f"eigenvalues {basis.eigenvalues[0]:.4g} .. {basis.eigenvalues[-1]:.4g}")
