"""Rule prepare_dataset: make a dataset available and write its manifest."""

from firstlayer_zoo.dataset_sources import prepare_dataset
from firstlayer_zoo.limits import Limits, applied
from firstlayer_zoo.rule_io import logged

# The study's limits bound the download (size, time) and the unpacking of a remote dataset's archive. They are
# read from the config, not given as a rule param: a param would make every change of a limit prepare every
# dataset again, and so recompute every basis, for data that is the same.
with logged(snakemake), applied(Limits.from_dict(snakemake.config.get("limits"))):
    manifest = prepare_dataset(snakemake.wildcards.dataset, snakemake.params.options,
                               snakemake.params.root, snakemake.output[0])
    print(f"{manifest['n_images']} of {manifest['n_available']} images from source {manifest['source']}")
