"""Rule patch_statistics: the exact patch bases of one (dataset, preprocessing) at its kernel sizes, from one
reading of its images."""

from pathlib import Path

import torch

from firstlayer_zoo.basis import save_bases
from firstlayer_zoo.dataset_sources.base import prepared_indices
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.patchstats import source_bases
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    # Parallel over pieces of work in the engines' threads, not within each small op.
    torch.set_num_threads(1)
    wildcards = snakemake.wildcards
    preprocessing = Preprocessing.from_dict(snakemake.params.preprocessing)
    if preprocessing.in_chans != int(wildcards.c):
        raise ValueError(f"preprocessing {wildcards.prep} has {preprocessing.in_chans} channels, not {wildcards.c}")
    source = dataset_source(wildcards.dataset, snakemake.params.options)
    bases = source_bases(
        source,
        Path(snakemake.params.root),
        preprocessing,
        snakemake.params.kernel_sizes,
        device=snakemake.params.device,
        # Decoding workers feed the engines' threads; on a GPU the threads matter little.
        workers=snakemake.threads - 1,
        threads=snakemake.threads,
        meta={"dataset": wildcards.dataset},
        offsets=snakemake.params.autocorrelation_offsets,
        second_moment=snakemake.params.moments,
        indices=prepared_indices(snakemake.input[0]),
    )
    save_bases(snakemake.output[0], bases)
    for basis in bases:
        for name, use in basis.meta["engines"].items():
            print(f"k={basis.kernel_size}: engine {name} on {use['images']} images: " + "; ".join(use["why"]))
        print(f"k={basis.kernel_size}: {basis.n_patches} patches from {basis.n_images} images; "
              f"eigenvalues {basis.eigenvalues[0]:.4g} .. {basis.eigenvalues[-1]:.4g}")
