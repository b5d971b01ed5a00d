"""Rule fetch_checkpoint: download what one remote checkpoint's stem is read from into its local cache."""

import json

from firstlayer_zoo.atomic import write_text
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.zoos import fetch_checkpoint

with logged(snakemake):
    record = fetch_checkpoint(CheckpointSpec.from_dict(snakemake.params.spec))
    print(record)
    write_text(snakemake.output[0], json.dumps(record, indent=1, sort_keys=True))
