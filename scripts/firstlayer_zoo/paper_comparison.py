"""The numbers Chowers & Weiss (ICML 2023) report, beside the same quantities measured in a study.

The paper's values live in one file, workflow/resources/paper_values.csv, each
with the table or passage it comes from. A study's dataset stands for one of
the paper's datasets (cifar10, cifar100, celeba, imagenet) when its source or
its name is that name. Every quantity is measured on each run's last kept
checkpoint, in one patch basis; a quantity whose checkpoints the study lacks
(an architecture, a label regime, a second width) has no row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .paths import PAPER_VALUES
from .plots import last_checkpoint_of_each_run
from .tables import schema_frame

# The paper's CIFAR nets, by their names in cifar_nets.CIFAR_NETS, and torchvision's ResNet-18.
VGG11, RESNET18_CIFAR, RESNET18_IMAGENET = "vgg11_bn_cifar", "resnet18_cifar", "resnet18"
# The paper's "random labels" are a permutation of the true ones; uniform draws are compared too, said so.
RANDOM_REGIMES = ("permuted", "random")


def paper_datasets(datasets: dict[str, dict], paper_values: pd.DataFrame) -> dict[str, str]:
    """{config dataset: the paper's dataset it stands for}: the paper's name as the dataset's source or name."""
    known = set(paper_values["dataset"])
    matched = {}
    for name, options in datasets.items():
        for candidate in (name, options["source"]):
            if candidate in known:
                matched[name] = candidate
                break
    return matched


def read_paper_values(path: str | Path = PAPER_VALUES) -> pd.DataFrame:
    return pd.read_csv(path)


class Basis:
    """One basis' last checkpoints with their pair correlations, profile fits and metadata."""

    def __init__(self, members: pd.DataFrame, profiles: pd.DataFrame, fits: pd.DataFrame):
        self.members = members.reset_index(drop=True)
        energies = (profiles[profiles["checkpoint"].isin(self.members["checkpoint"])]
                    .pivot(index="checkpoint", columns="component", values="energy")
                    .loc[self.members["checkpoint"]].to_numpy())
        self.r = np.corrcoef(energies) if len(energies) > 1 else np.ones((len(energies), len(energies)))
        self.fits = fits.set_index("checkpoint").loc[self.members["checkpoint"]].reset_index()

    def select(self, arch: str | None, labels: tuple[str, ...] | None, init_subtracted: bool) -> np.ndarray:
        chosen = np.ones(len(self.members), dtype=bool)
        if arch is not None:
            chosen &= (self.members["arch"] == arch).to_numpy()
        if labels is not None:
            chosen &= self.members["labels"].isin(labels).to_numpy()
        if init_subtracted:
            chosen &= self.members["init_subtracted"].fillna(False).to_numpy(dtype=bool)
        return chosen

    def pairs(self, a: np.ndarray, b: np.ndarray, condition: Callable[[np.ndarray, np.ndarray], np.ndarray]
              ) -> np.ndarray:
        """r of every unordered pair with one member in `a` and the other in `b` that meets `condition`."""
        first, second = np.triu_indices(len(self.members), k=1)
        wanted = ((a[first] & b[second]) | (a[second] & b[first])) & condition(first, second)
        return self.r[first[wanted], second[wanted]]

    def column(self, name: str) -> np.ndarray:
        return self.members[name].to_numpy()


def _same(values: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda first, second: values[first] == values[second]


def _other(values: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda first, second: values[first] != values[second]


def measured_quantities(basis: Basis) -> list[tuple[str, str, np.ndarray]]:
    """(quantity as paper_values.csv names it, what was measured, the values averaged) for one basis."""
    width = np.nan_to_num(basis.column("width").astype(float), nan=1.0)  # no width: the architecture's own
    seed = basis.column("seed")
    vgg_true = basis.select(VGG11, ("true",), init_subtracted=True)
    resnet_true = basis.select(RESNET18_CIFAR, ("true",), init_subtracted=True)
    fit_r, r_init = basis.fits["fit_r"].to_numpy(), basis.fits["r_init"].to_numpy(dtype=float)
    every = lambda first, second: np.ones(len(first), dtype=bool)  # noqa: E731
    found = [
        ("VGG-11, other seed", f"{VGG11}, true labels, pairs of the same width and other seeds",
         basis.pairs(vgg_true, vgg_true, lambda f, s: _same(width)(f, s) & _other(seed)(f, s))),
        ("VGG-11, other width", f"{VGG11}, true labels, pairs of other widths",
         basis.pairs(vgg_true, vgg_true, _other(width))),
        ("VGG-11 vs ResNet-18", f"{VGG11} vs {RESNET18_CIFAR}, true labels, every pair",
         basis.pairs(vgg_true, resnet_true, every)),
        ("VGG-11, trained vs its initialisation", f"{VGG11}, true labels, W - W0 vs W0, per checkpoint",
         r_init[vgg_true]),
        ("VGG-11, fit r of the analytic profile", f"{VGG11}, true labels, W - W0, per checkpoint",
         fit_r[vgg_true]),
        ("ResNet-18, fit r of the analytic profile", f"{RESNET18_IMAGENET}, per checkpoint",
         fit_r[basis.select(RESNET18_IMAGENET, None, init_subtracted=False)]),
        ("ImageNet models, fit r of the analytic profile", "every model not trained on random labels",
         fit_r[~basis.members["labels"].isin(RANDOM_REGIMES).to_numpy()]),
    ]
    for regime in RANDOM_REGIMES:
        vgg_random = basis.select(VGG11, (regime,), init_subtracted=True)
        found += [
            ("VGG-11, random labels, trained vs its initialisation",
             f"{VGG11}, {regime} labels, W - W0 vs W0, per checkpoint", r_init[vgg_random]),
            ("VGG-11, true vs random labels", f"{VGG11}, true vs {regime} labels, pairs of the same width",
             basis.pairs(vgg_true, vgg_random, _same(width))),
        ]
    return [(quantity, setting, values[~np.isnan(values)]) for quantity, setting, values in found]


def paper_comparison(checkpoints: pd.DataFrame, profiles: pd.DataFrame, fits: pd.DataFrame,
                     paper_values: pd.DataFrame, datasets: dict[str, str]) -> pd.DataFrame:
    """Rows (quantity, setting, paper_value, paper_std, measured, measured_std, n), one per quantity the paper
    reports for a basis' dataset and the study measured there; `datasets` maps config datasets to the paper's.

    measured is the mean over the n values (checkpoints, or pairs of them), measured_std their standard deviation
    (ddof 1; null for one value).
    """
    last = last_checkpoint_of_each_run(checkpoints)
    last = last[last["dataset"].isin(list(datasets)) & last["checkpoint"].isin(fits["checkpoint"])]
    paper = paper_values.set_index(["quantity", "dataset"])
    rows = []
    for basis_slug, members in last.groupby("basis", sort=True):
        paper_dataset = datasets[members["dataset"].iloc[0]]
        for quantity, setting, values in measured_quantities(Basis(members, profiles, fits)):
            if (quantity, paper_dataset) not in paper.index or not values.size:
                continue
            reported = paper.loc[(quantity, paper_dataset)]
            rows.append({
                "quantity": f"{quantity} ({paper_dataset})",
                "setting": f"{basis_slug}: {setting}; each run's last checkpoint",
                "paper_value": reported["paper_value"],
                "paper_std": reported["paper_std"] if pd.notna(reported["paper_std"]) else None,
                "measured": float(values.mean()),
                "measured_std": float(values.std(ddof=1)) if values.size > 1 else None,
                "n": int(values.size),
            })
    return schema_frame(rows, "paper_comparison")
