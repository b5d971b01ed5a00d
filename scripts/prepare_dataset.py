"""Rule prepare_dataset: make a dataset available and write its manifest."""

from firstlayer_zoo.dataset_sources import prepare_dataset
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    manifest = prepare_dataset(snakemake.wildcards.dataset, snakemake.params.options,
                               snakemake.params.root, snakemake.output[0])
    print(f"{manifest['n_images']} of {manifest['n_available']} images from source {manifest['source']}")
