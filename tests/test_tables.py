"""The tables' contract as the README states it: the columns it lists, and values a reader can recompute."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.paper_comparison import paper_comparison, read_paper_values
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.stems import Stem
from firstlayer_zoo.tables import build_tables, write_table

ROOT = Path(__file__).resolve().parents[1]


def readme_columns() -> dict[str, list[str]]:
    """{table: columns} from the README's Outputs rows: the backticked names outside parentheses, in order.

    Inside parentheses the README explains a column (values such as `ok`, config keys, other columns
    it depends on); outside them it lists the columns themselves.
    """
    columns = {}
    rows = re.findall(r"^\| `results/tables/(\w+)\.parquet` \| (.*) \|$", (ROOT / "README.md").read_text(), re.M)
    for name, cell in rows:
        depth, outside = 0, []
        for char in cell:
            depth += (char == "(") - (char == ")")
            if depth == 0 and char != ")":
                outside.append(char)
        names = [token for token in re.findall(r"`([^`]*)`", "".join(outside))
                 if re.fullmatch(r"[a-z][a-z0-9_]*", token)]
        columns[name] = list(dict.fromkeys(names))
    return columns


def spectrum_basis(s: np.ndarray) -> PatchBasis:
    """A 3x3 RGB basis with eigenvalues s along random orthonormal directions."""
    u, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(27, 27)))
    return PatchBasis(kernel_size=3, in_chans=3, mean=np.zeros(27), covariance=u @ np.diag(s) @ u.T,
                      eigenvalues=s, eigenvectors=u, n_patches=1, n_images=1)


def small_study():
    s = np.logspace(0, -4, 27)
    basis = spectrum_basis(s)
    rng = np.random.default_rng(1)
    analyses = []
    for seed in range(3):
        spec = CheckpointSpec(zoo="z", name=f"c{seed}", source="folder", arch="a", locator=f"c{seed}.pt",
                              first_conv="conv1", kernel_size=3, in_chans=3, dataset="photos",
                              preprocessing=Preprocessing(), step=100, seed=seed, labels="true", run=f"a-s{seed}")
        init = rng.normal(size=(6, 3, 3, 3))
        stem = Stem(weight=init + rng.normal(size=init.shape), init=init, stride=2, first_conv="conv1")
        analyses.append(analyse_stem(spec, stem, basis, subtract_init=True))
    return analyses, s


def test_written_tables_have_exactly_the_readme_columns_in_order(tmp_path):
    expected = readme_columns()
    tables = build_tables(small_study()[0])
    tables["paper_comparison"] = paper_comparison(tables["checkpoints"], tables["profiles"], tables["fits"],
                                                  read_paper_values(), {})
    assert sorted(expected) == sorted(tables)
    for name, frame in tables.items():
        write_table(frame, name, tmp_path / f"{name}.parquet")
        assert pq.read_schema(tmp_path / f"{name}.parquet").names == expected[name], name


def test_table_values_a_reader_can_recompute():
    analyses, s = small_study()
    tables = build_tables(analyses)
    checkpoints = tables["checkpoints"].set_index("checkpoint")
    assert list(checkpoints["run"]) == ["a-s0", "a-s1", "a-s2"]
    assert list(checkpoints["seed"]) == [0, 1, 2]
    fits = tables["fits"].set_index("checkpoint")
    profiles = tables["profiles"]
    for checkpoint, fit in fits.iterrows():
        energy = profiles.loc[profiles["checkpoint"] == checkpoint, "energy"].to_numpy()
        init = profiles.loc[profiles["checkpoint"] == checkpoint, "energy_init"].to_numpy()
        assert fit["tau_s1"] == pytest.approx(fit["tau"] * s[0], rel=1e-12)
        assert fit["frac_whitened"] == np.count_nonzero(fit["tau"] * s > 1) / 27
        assert fit["input_spread"] == pytest.approx(4.0)
        output = energy**2 * s
        assert fit["output_spread"] == pytest.approx(np.log10(output.max() / output.min()), rel=1e-12)
        assert fit["r_init"] == pytest.approx(np.corrcoef(energy, init)[0, 1], abs=1e-12)
        others = [np.corrcoef(energy, profiles.loc[profiles["checkpoint"] == other, "energy"])[0, 1]
                  for other in fits.index if other != checkpoint]
        assert fit["mean_r"] == pytest.approx(np.mean(others), abs=1e-12)
    summary = tables["consistency_summary"].set_index("relation")
    init_row = summary.loc["trained vs its own initialisation"]
    assert (init_row["min_r"], init_row["max_r"]) == (fits["r_init"].min(), fits["r_init"].max())


def test_the_checkpoint_and_fits_rows_are_copies_of_the_record():
    """tables.py computes nothing per checkpoint: a fits row is its analysis' measures, bit for bit, and a
    provenance column what the source wrote."""
    from dataclasses import replace

    from firstlayer_zoo.checkpoint_record import MEASURES

    analyses, _ = small_study()
    analyses[0] = replace(analyses[0], checkpoint=replace(analyses[0].checkpoint, extra={"hyperparameters": "{}"}),
                          stem_meta={"bytes_fetched": 7})
    tables = build_tables(analyses)
    fits = tables["fits"].set_index("checkpoint")
    for analysis in analyses:
        row = fits.loc[analysis.checkpoint.id]
        for measure in MEASURES:
            value = analysis.measures[measure.name]
            assert row[measure.name] == value if value is not None else pd.isna(row[measure.name]), measure.name
    first = tables["checkpoints"].iloc[0]
    assert (first["hyperparameters"], first["bytes_fetched"]) == ("{}", 7)
    assert tables["checkpoints"]["hyperparameters"].iloc[1:].isna().all()
