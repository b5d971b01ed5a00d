"""Rule profile_stem: energy profile, analytic fit and whitening of one stem."""

from firstlayer_zoo.analysis import analyse_stem, require_ok
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.stems import Stem

with logged(snakemake):
    spec = CheckpointSpec.from_dict(snakemake.params.spec)
    basis = PatchBasis.load(snakemake.input.basis[0]) if snakemake.input.basis else None
    analysis = analyse_stem(spec, Stem.load(snakemake.input.stem), basis, snakemake.params.subtract_init)
    print(f"{spec.id}: {analysis.status}" + (f", fit r={analysis.fit.fit_r:.4f}" if analysis.fit else ""))
    if snakemake.params.strict:
        require_ok(spec, analysis.status)
    analysis.save(snakemake.output[0])
