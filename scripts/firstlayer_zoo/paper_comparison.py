"""The numbers Chowers & Weiss (ICML 2023) report, beside the same quantities measured in any study.

The paper's values live in one file, workflow/resources/paper_values.csv: each
quantity (other seed, other width, other architecture, trained vs its
initialisation, true vs random labels, the analytic fit's r), the paper's
setting (its architecture, labels, what is correlated), its dataset, and the
table or passage it comes from. A study's dataset stands for one of the
paper's datasets (cifar10, cifar100, celeba, imagenet) when its source or its
name is that name; any other dataset is set beside the paper's CIFAR-10
numbers, its main experiments, and its rows say so.

A row is there wherever the study has its ingredients (seeds of one
architecture, true and random labels, two architectures in one basis, a known
initialisation, fits); a quantity whose checkpoints the study lacks has no
row. Where the study trained the paper's own architecture (VGG-11 and ResNet-18
in CIFAR form, or torchvision's ResNet-18 on ImageNet) the row measures that
one; otherwise each of the study's architectures stands in for it, named in
the row's setting beside the paper's. Every quantity is measured on each run's
last kept checkpoint, in one patch basis.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .paths import PAPER_VALUES
from .plots import last_checkpoint_of_each_run
from .tables import schema_frame

# The paper's architectures by their names here: its CIFAR nets (cifar_nets.CIFAR_NETS) and torchvision's ResNet-18.
VGG11, RESNET18_CIFAR, RESNET18_IMAGENET = "vgg11_bn_cifar", "resnet18_cifar", "resnet18"
# The paper's "random labels" are a permutation of the true ones; uniform draws are compared too, said so.
RANDOM_REGIMES = ("permuted", "random")
# The paper's numbers a dataset that is none of the paper's is set beside: its main experiments.
REFERENCE_DATASET = "cifar10"


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


def paper_archs(paper_dataset: str) -> tuple[str, tuple[str, str]]:
    """The paper's architecture for the quantities of one architecture, and its pair for `other architecture`."""
    return (RESNET18_IMAGENET if paper_dataset == "imagenet" else VGG11), (VGG11, RESNET18_CIFAR)


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


def _described(values: pd.Series, what: str) -> str:
    """`true labels`, `labels unknown`, or the values seen: how a group of checkpoints' labels read."""
    seen = sorted(set(values.dropna()))
    unknown = " or unknown" if values.isna().any() and seen else ""
    return f"{' or '.join(seen)}{unknown} {what}" if seen else f"{what} unknown"


def measured_quantities(basis: Basis, paper_dataset: str) -> list[tuple[str, str, np.ndarray]]:
    """(quantity as paper_values.csv names it, what was measured, the values averaged) for one basis."""
    members = basis.members
    archs = sorted(set(members["arch"].dropna()))
    single, pair = paper_archs(paper_dataset)
    width = np.nan_to_num(basis.column("width").astype(float), nan=1.0)  # no width: the architecture's own
    seed = basis.column("seed")
    seed_known = members["seed"].notna().to_numpy()
    labels = members["labels"]
    not_random = ~labels.isin(RANDOM_REGIMES).to_numpy()
    subtracted = members["init_subtracted"].fillna(False).to_numpy(dtype=bool)
    fit_r, r_init = basis.fits["fit_r"].to_numpy(), basis.fits["r_init"].to_numpy(dtype=float)
    every = lambda first, second: np.ones(len(first), dtype=bool)  # noqa: E731
    other_seed = lambda f, s: _same(width)(f, s) & seed_known[f] & seed_known[s] & _other(seed)(f, s)  # noqa: E731
    found = []
    for arch in [single] if single in archs else archs:
        true = basis.select(arch, ("true",), init_subtracted=True)
        of_arch = (members["arch"] == arch).to_numpy()
        same_width = " of the same width" if len(set(width[of_arch])) > 1 else ""
        fitted = of_arch & not_random
        profile = "W - W0" if subtracted[fitted].all() else "W" if not subtracted[fitted].any() else "W - W0 or W"
        found += [
            ("other seed", f"{arch}, true labels, pairs{same_width} of other seeds",
             basis.pairs(true, true, other_seed)),
            ("other width", f"{arch}, true labels, pairs of other widths", basis.pairs(true, true, _other(width))),
            ("trained vs its initialisation", f"{arch}, true labels, W - W0 vs W0", r_init[true]),
            ("fit r of the analytic profile", f"{arch}, {_described(labels[fitted], 'labels')}, {profile}",
             fit_r[fitted]),
        ]
        for regime in RANDOM_REGIMES:
            random = basis.select(arch, (regime,), init_subtracted=True)
            found += [
                ("random labels: trained vs its initialisation", f"{arch}, {regime} labels, W - W0 vs W0",
                 r_init[random]),
                ("true vs random labels", f"{arch}, true vs {regime} labels, {'pairs' + same_width if same_width else 'every pair'}",
                 basis.pairs(true, random, _same(width))),
            ]
    for first, second in [pair] if set(pair) <= set(archs) else itertools.combinations(archs, 2):
        found.append(("other architecture", f"{first} vs {second}, true labels, every pair",
                      basis.pairs(basis.select(first, ("true",), init_subtracted=True),
                                  basis.select(second, ("true",), init_subtracted=True), every)))
    found.append(("fit r of the analytic profile, models pooled",
                  f"{len(archs)} architectures, {_described(labels[not_random], 'labels')}", fit_r[not_random]))
    return [(quantity, setting, values[~np.isnan(values)]) for quantity, setting, values in found]


def paper_comparison(checkpoints: pd.DataFrame, profiles: pd.DataFrame, fits: pd.DataFrame,
                     paper_values: pd.DataFrame, datasets: dict[str, str]) -> pd.DataFrame:
    """Rows (quantity, paper_setting, setting, paper_value, paper_std, measured, measured_std, n), one per quantity
    the paper reports and the study measured in a basis; `datasets` maps config datasets to the paper's, and any
    other dataset is set beside the paper's REFERENCE_DATASET.

    measured is the mean over the n values (checkpoints, or pairs of them), measured_std their standard deviation
    (ddof 1; null for one value).
    """
    last = last_checkpoint_of_each_run(checkpoints)
    last = last[last["checkpoint"].isin(fits["checkpoint"])]
    paper = paper_values.set_index(["quantity", "dataset"])
    rows = []
    for basis_slug, members in last.groupby("basis", sort=True):
        dataset = members["dataset"].iloc[0]
        paper_dataset = datasets.get(dataset, REFERENCE_DATASET)
        ours = dataset if dataset in datasets else f"{dataset}, none of the paper's datasets"
        for quantity, setting, values in measured_quantities(Basis(members, profiles, fits), paper_dataset):
            if (quantity, paper_dataset) not in paper.index or not values.size:
                continue
            reported = paper.loc[(quantity, paper_dataset)]
            rows.append({
                "quantity": quantity,
                "paper_setting": f"{reported['paper_setting']}; {paper_dataset}; {reported['source']}",
                "setting": f"{setting}; {ours}; basis {basis_slug}, each run's last checkpoint",
                "paper_value": reported["paper_value"],
                "paper_std": reported["paper_std"] if pd.notna(reported["paper_std"]) else None,
                "measured": float(values.mean()),
                "measured_std": float(values.std(ddof=1)) if values.size > 1 else None,
                "n": int(values.size),
            })
    return schema_frame(rows, "paper_comparison")
