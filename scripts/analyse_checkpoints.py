"""Rule analyse_checkpoints: read the stem of every checkpoint in one shard and profile it in its basis."""

from firstlayer_zoo.limits import Limits, applied
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.shard_analysis import analyse_shard
from firstlayer_zoo.shards import save_analyses

with logged(snakemake):
    specs = [CheckpointSpec.from_dict(spec) for spec in snakemake.params.specs]
    with applied(Limits.from_dict(snakemake.params.limits)):
        analyses = analyse_shard(specs, snakemake.params.bases, snakemake.params.subtract_init,
                                 snakemake.params.strict)
    save_analyses(snakemake.output[0], analyses)
    ok = sum(analysis.ok for analysis in analyses)
    print(f"{ok} of {len(analyses)} checkpoints analysed")
