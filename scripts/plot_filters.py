"""Rule plot_filters: one basis' top components and a few of its checkpoints' filters, as pictures."""

from firstlayer_zoo.analysis import CheckpointAnalysis
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.plots import plot_filters
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    slug = snakemake.wildcards.basis
    members = []
    for path in snakemake.input.analyses:
        analysis = CheckpointAnalysis.load(path)
        key = CheckpointSpec.from_dict(analysis.spec).basis
        if key is not None and key.slug == slug:
            members.append(analysis)
    basis = PatchBasis.load(snakemake.input.basis)
    plot_filters(members, basis.eigenvectors, basis.kernel_size, basis.in_chans, slug,
                 snakemake.params.checkpoints, snakemake.output[0])
