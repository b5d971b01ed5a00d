"""Rule plot_bases: per basis, the clustered consistency heatmap and its filters as pictures."""

from firstlayer_zoo.analysis import FILTER_ARRAYS
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.plots import choose_for_pictures, plot_consistency, plot_filters
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.shards import load_analyses
from firstlayer_zoo.tables import read_table

with logged(snakemake):
    params, out = snakemake.params, snakemake.output
    checkpoints = read_table(snakemake.input.checkpoints)
    consistency = read_table(snakemake.input.consistency)
    groups = read_table(snakemake.input.groups)
    # Filters are chosen from every analysis read without them; only the chosen few's shards are read again.
    by_basis = {slug: {} for slug in params.slugs}
    for path in snakemake.input.analyses:
        for analysis in load_analyses(path, skip=FILTER_ARRAYS):
            basis = analysis.checkpoint.basis
            if basis is not None and basis.slug in by_basis:
                by_basis[basis.slug][analysis.checkpoint.id] = (path, analysis)
    for slug, basis_path, heatmap, pictures in zip(params.slugs, snakemake.input.bases, out.consistency, out.filters):
        plot_consistency(checkpoints, consistency, groups, slug, heatmap, params.heatmap_checkpoints)
        members = by_basis[slug]
        chosen = {analysis.checkpoint.id for analysis in choose_for_pictures(
            [analysis for _, analysis in members.values()], params.filter_checkpoints)}
        with_filters = [analysis for path in sorted({members[name][0] for name in chosen})
                        for analysis in load_analyses(path) if analysis.checkpoint.id in chosen]
        basis = PatchBasis.load(basis_path)
        plot_filters(with_filters, basis.eigenvectors, basis.kernel_size, basis.in_chans, slug,
                     params.filter_checkpoints, pictures)
        print(f"{slug}: {len(members)} checkpoints, {len(with_filters)} drawn as filters")
