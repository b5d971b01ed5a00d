"""Rule prepare_dataset: make a dataset available and write its manifest."""

import json
from pathlib import Path

from firstlayer_zoo.atomic import write_text
from firstlayer_zoo.datasets import dataset_source
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    source = dataset_source(snakemake.wildcards.dataset, snakemake.params.options)
    manifest = source.prepare(Path(snakemake.params.root))
    write_text(snakemake.output[0], json.dumps(manifest, indent=1, sort_keys=True))
