"""Rule fetch_checkpoints: download what one shard's remote checkpoints are read from into their local cache."""

import json

from firstlayer_zoo.atomic import write_text
from firstlayer_zoo.limits import Limits, applied
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.zoo_sources import fetch_checkpoint

with logged(snakemake), applied(Limits.from_dict(snakemake.params.limits)):
    records = {}
    for values in snakemake.params.specs:
        spec = CheckpointSpec.from_dict(values)
        records[spec.id] = fetch_checkpoint(spec)
        print(spec.id, records[spec.id])
    write_text(snakemake.output[0], json.dumps(records, indent=1, sort_keys=True))
