"""What a finished run of tests/tiny_config.yaml must hold, however it ran (locally or through SLURM)."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from firstlayer_zoo.tables import SCHEMAS


def read_table(workdir, name):
    path = workdir / "results" / "tables" / f"{name}.parquet"
    assert pq.read_schema(path).names == SCHEMAS[name].names
    assert pq.read_schema(path).equals(SCHEMAS[name], check_metadata=False)
    return pd.read_parquet(path)


def check_checkpoints_table_follows_the_contract(workdir):
    table = read_table(workdir, "checkpoints")
    # 1 arch x 2 seeds x 2 label regimes x 2 kept steps.
    assert len(table) == 8
    assert table["checkpoint"].is_unique
    assert set(table["status"]) == {"ok"}
    assert set(table["labels"]) == {"true", "random"}
    assert set(table["step"]) == {4, 8}
    assert set(table["seed"]) == {0, 1}
    row = table.iloc[0]
    assert row["zoo"] == "tiny" and row["source"] == "train" and row["arch"] == "test_resnet"
    assert row["first_conv"] == "conv1.0"
    assert (row["kernel_size"], row["in_chans"], row["out_channels"], row["stride"]) == (3, 3, 16, 2)
    assert table["init_known"].all() and table["init_subtracted"].all()
    for uri in table["uri"]:
        assert (workdir / uri).is_file()


def check_profiles_table_follows_the_contract(workdir):
    profiles = read_table(workdir, "profiles")
    assert profiles.groupby("checkpoint").size().eq(27).all()
    for _, group in profiles.groupby("checkpoint"):
        assert list(group["component"]) == list(range(1, 28))
        assert np.all(np.diff(group["eigenvalue"]) <= 0)
        assert group["energy"].max() == pytest.approx(1.0)
        assert group["energy_init"].max() == pytest.approx(1.0)


def check_fits_table_follows_the_contract(workdir):
    fits = read_table(workdir, "fits")
    assert len(fits) == 8
    assert (fits["tau"] > 0).all()
    assert fits["fit_r"].between(-1, 1).all()
    assert fits["frac_whitened"].between(0, 1).all()
    assert (fits["input_spread"] > 0).all()
    # Image space at the default offsets' largest, 10 px; colour split of 3-channel stems.
    assert (fits["autocorr_offset"] == 10).all()
    for column in ("autocorr_data", "autocorr_init", "autocorr_trained"):
        assert fits[column].between(-1, 1).all()
    assert fits["autocorr_data"].nunique() == 1  # one basis, one dataset
    assert fits["colour_energy"].between(0, 1).all() and fits["colour_energy_init"].between(0, 1).all()
    curves = read_table(workdir, "autocorrelation")
    assert curves.groupby("checkpoint")["offset"].apply(list).map([2, 5, 10].__eq__).all()


def check_consistency_table_pairs_each_basis_once(workdir):
    consistency = read_table(workdir, "consistency")
    assert len(consistency) == 8 * 7 // 2
    assert consistency["basis"].nunique() == 1
    assert consistency["r"].between(-1, 1).all()
    assert (consistency["checkpoint_a"] != consistency["checkpoint_b"]).all()


def check_plots_and_logs_exist(workdir):
    plots = workdir / "results" / "plots"
    for name in ["profiles", "fits", "fit_quality", "training_time", "whitening", "autocorrelation", "colour",
                 "paper_comparison"]:
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((plots / "consistency").glob("*.png"))) == 1
    assert len(list((plots / "filters").glob("*.png"))) == 1
    log = (workdir / "results" / "logs" / "build_tables.log").read_text()
    assert log.count("rows") == len(SCHEMAS)
    # One arch, two seeds, true and random labels: other seed, trained vs its init (both regimes), fit r,
    # true vs random labels, each beside the paper's CIFAR-10 number.
    assert "paper_comparison: 5 rows" in log


def check_consistency_summary_groups_every_pair_and_the_init(workdir):
    summary = read_table(workdir, "consistency_summary")
    consistency = read_table(workdir, "consistency")
    init = summary[summary["relation"] == "trained vs its own initialisation"]
    assert init["n_pairs"].sum() == 8
    pairs = summary[summary["relation"] != "trained vs its own initialisation"]
    assert pairs["n_pairs"].sum() == len(consistency)
    # One architecture: every pair shares it; seeds, labels and steps vary.
    assert pairs["relation"].str.startswith("same arch").all()
    assert "same arch, other labels, other seed, other step" in set(pairs["relation"])
    fits = read_table(workdir, "fits")
    assert fits["r_init"].between(-1, 1).all()
    row = init.iloc[0]
    assert row["median_r"] == pytest.approx(fits["r_init"].median())


def check_consistency_values_follow_from_the_profiles(workdir):
    """Pairs, per-checkpoint means, relation means and group means, recomputed from the profiles table."""
    profiles = read_table(workdir, "profiles").pivot(index="checkpoint", columns="component", values="energy")
    matrix = pd.DataFrame(np.corrcoef(profiles.to_numpy()), index=profiles.index, columns=profiles.index)
    consistency = read_table(workdir, "consistency")
    expected = [matrix.at[a, b] for a, b in zip(consistency["checkpoint_a"], consistency["checkpoint_b"])]
    np.testing.assert_allclose(consistency["r"], expected, atol=1e-12)
    fits = read_table(workdir, "fits").set_index("checkpoint")
    for checkpoint in profiles.index:
        others = matrix.loc[checkpoint].drop(checkpoint)
        assert fits.at[checkpoint, "mean_r"] == pytest.approx(others.mean(), abs=1e-12)
    checkpoints = read_table(workdir, "checkpoints").set_index("checkpoint")
    relation = [", ".join(("same " if checkpoints.at[a, g] == checkpoints.at[b, g] else "other ") + g
                          for g in ["arch", "labels", "seed", "step"])
                for a, b in zip(consistency["checkpoint_a"], consistency["checkpoint_b"])]
    means = consistency.assign(relation=relation).groupby("relation")["r"].mean()
    summary = read_table(workdir, "consistency_summary").set_index("relation")
    for name, mean in means.items():
        assert summary.at[name, "mean_r"] == pytest.approx(mean, abs=1e-12)
        assert summary.at[name, "n_sampled"] == summary.at[name, "n_pairs"]  # every pair kept: nothing sampled
    groups = read_table(workdir, "consistency_groups")
    assert groups["n_pairs"].sum() == len(consistency)
    assert groups["mean_r"].between(-1, 1).all()


# Every check above, for runs that check them all at once.
TINY_RUN_CHECKS = [
    check_checkpoints_table_follows_the_contract,
    check_profiles_table_follows_the_contract,
    check_fits_table_follows_the_contract,
    check_consistency_table_pairs_each_basis_once,
    check_plots_and_logs_exist,
    check_consistency_summary_groups_every_pair_and_the_init,
    check_consistency_values_follow_from_the_profiles,
]
