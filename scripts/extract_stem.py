"""Rule extract_stem: read one checkpoint's first conv (and its init, where known)."""

from firstlayer_zoo.analysis import require_ok
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.zoos import extract_stem

with logged(snakemake):
    spec = CheckpointSpec.from_dict(snakemake.params.spec)
    stem = extract_stem(spec)
    print(f"{spec.id}: {stem.status}")
    if snakemake.params.strict:
        require_ok(spec, stem.status)
    stem.save(snakemake.output[0])
