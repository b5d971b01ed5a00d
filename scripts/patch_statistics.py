"""Rule patch_statistics: the exact pixel statistics of one (dataset, pixel pipeline) at its kernel sizes, from
one reading of its images."""

from pathlib import Path

import torch

from firstlayer_zoo.basis import save_pixel_statistics
from firstlayer_zoo.dataset_sources.base import prepared_indices
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.patchstats import source_pixel_statistics
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    # Parallel over pieces of work in the engines' threads, not within each small op.
    torch.set_num_threads(1)
    wildcards = snakemake.wildcards
    pixels = Preprocessing.from_dict(snakemake.params.preprocessing)
    if pixels.in_chans != int(wildcards.c):
        raise ValueError(f"pixel pipeline {wildcards.pixels} has {pixels.in_chans} channels, not {wildcards.c}")
    source = dataset_source(wildcards.dataset, snakemake.params.options)
    statistics = source_pixel_statistics(
        source,
        Path(snakemake.params.root),
        pixels,
        snakemake.params.kernel_sizes,
        device=snakemake.params.device,
        # Decoding workers feed the engines' threads; on a GPU the threads matter little.
        workers=snakemake.threads - 1,
        threads=snakemake.threads,
        meta={"dataset": wildcards.dataset},
        offsets=snakemake.params.autocorrelation_offsets,
        indices=prepared_indices(snakemake.input[0]),
    )
    save_pixel_statistics(snakemake.output[0], statistics)
    print(f"{snakemake.threads} thread(s)")
    for entry in statistics:
        for name, use in entry.meta["engines"].items():
            print(f"k={entry.kernel_size}: engine {name} on {use['images']} images: " + "; ".join(use["why"]))
        print(f"k={entry.kernel_size}: {entry.n_patches} patches from {entry.n_images} images")
