"""Rule patch_basis: the patch bases of one (dataset, preprocessing) at its kernel sizes, from the pixel
statistics of its pixel pipeline (normalised analytically, then decomposed); numpy only, no torch to import."""

from pathlib import Path

from firstlayer_zoo.basis import load_pixel_statistics, save_bases
from firstlayer_zoo.paths import BASIS_NAME, kernel_sizes
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.rule_io import logged

with logged(snakemake):
    preprocessing = Preprocessing.from_dict(snakemake.params.preprocessing)
    held = {size: path for path in snakemake.input
            for size in kernel_sizes(BASIS_NAME.fullmatch(Path(path).name)["kernels"])}
    bases = []
    for size in snakemake.params.kernel_sizes:
        basis = load_pixel_statistics(held[size], size).basis_under(preprocessing, snakemake.params.moments)
        bases.append(basis)
        print(f"k={size}: from {held[size]}; {basis.n_patches} patches from {basis.n_images} images; "
              f"eigenvalues {basis.eigenvalues[0]:.4g} .. {basis.eigenvalues[-1]:.4g}")
    save_bases(snakemake.output[0], bases)
