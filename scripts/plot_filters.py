"""Rule plot_filters: one basis' top components and a few of its checkpoints' filters, as pictures."""

from firstlayer_zoo.analysis import FILTER_ARRAYS
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.plots import choose_for_pictures, plot_filters
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.shards import load_analyses

with logged(snakemake):
    slug = snakemake.wildcards.basis

    def in_basis(analysis):
        return analysis.checkpoint.basis is not None and analysis.checkpoint.basis.slug == slug

    # Choose from every analysis without its filters; read filters only from the shards of the chosen few.
    where = {}
    for path in snakemake.input.analyses:
        for analysis in load_analyses(path, skip=FILTER_ARRAYS):
            if in_basis(analysis):
                where[analysis.checkpoint.id] = (path, analysis)
    chosen = {analysis.checkpoint.id for analysis in
              choose_for_pictures([analysis for _, analysis in where.values()], snakemake.params.checkpoints)}
    members = [analysis for path in sorted({where[name][0] for name in chosen})
               for analysis in load_analyses(path) if analysis.checkpoint.id in chosen]
    basis = PatchBasis.load(snakemake.input.basis)
    plot_filters(members, basis.eigenvectors, basis.kernel_size, basis.in_chans, slug,
                 snakemake.params.checkpoints, snakemake.output[0])
