"""Rule profile_stem: energy profile, analytic fit and whitening of one stem."""

from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.stems import Stem

with logged(snakemake):
    spec = CheckpointSpec.from_dict(snakemake.params.spec)
    analysis = analyse_stem(spec, Stem.load(snakemake.input.stem),
                            PatchBasis.load(snakemake.input.basis), snakemake.params.subtract_init)
    print(f"{spec.id}: {analysis.status}" + (f", fit r={analysis.fit.fit_r:.4f}" if analysis.fit else ""))
    analysis.save(snakemake.output[0])
