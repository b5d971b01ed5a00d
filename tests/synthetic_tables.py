"""The study's tables for a made-up zoo of any size, to draw plots from without running a study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from firstlayer_zoo.settings import ConsistencySettings
from firstlayer_zoo.tables import SCHEMAS, consistency_tables

ARCHS = ["test_resnet", "test_byobnet", "resnet18", "convnext_tiny", "vgg11_bn", "efficientnet_b0"]
STEPS = [25, 50, 100, 200, 400, 450, 500, 1000, 5000, 10000]  # evenly and unevenly spaced on a log axis


def synthetic_tables(count: int, known: bool = True, components: int = 27, seed: int = 0) -> dict[str, pd.DataFrame]:
    """checkpoints, profiles, fits and the consistency tables of `count` ok checkpoints in one basis.

    known=False leaves arch, labels, seed, step and the initialisation unknown, as for third-party files.
    """
    rng = np.random.default_rng(seed)
    ids = [f"zoo/model_{index:05d}.safetensors" for index in range(count)]
    eigenvalues = np.sort(rng.lognormal(0, 2, components))[::-1]
    energy = np.sqrt(eigenvalues)[None, :] * rng.lognormal(0, 0.3, (count, components))
    energy /= energy.max(axis=1, keepdims=True)
    checkpoints = pd.DataFrame({column: pd.Series([None] * count, dtype=object)
                                for column in SCHEMAS["checkpoints"].names})
    checkpoints["checkpoint"], checkpoints["zoo"], checkpoints["status"] = ids, "zoo", "ok"
    checkpoints["basis"] = "photos-r128c0-k3c3"
    if known:
        runs = [index // len(STEPS) for index in range(count)]
        checkpoints["step"] = [STEPS[index % len(STEPS)] for index in range(count)]
        checkpoints["arch"] = [ARCHS[run % len(ARCHS)] for run in runs]
        checkpoints["labels"] = [("true", "random")[run // len(ARCHS) % 2] for run in runs]
        checkpoints["seed"] = [run // (2 * len(ARCHS)) for run in runs]
        checkpoints["run"] = [f"{a}-s{s}-{l}" for a, s, l in
                              zip(checkpoints["arch"], checkpoints["seed"], checkpoints["labels"])]
    profiles = pd.DataFrame({
        "checkpoint": np.repeat(ids, components),
        "component": np.tile(np.arange(1, components + 1), count),
        "eigenvalue": np.tile(eigenvalues, count),
        "energy": energy.ravel(),
        "energy_init": rng.uniform(0.5, 1, count * components) if known else np.nan,
    })
    fits = pd.DataFrame({
        "checkpoint": ids,
        "tau": rng.lognormal(0, 1, count),
        "tau_s1": rng.lognormal(1, 1, count),
        "fit_r": rng.uniform(0.8, 1.0, count),
        "frac_whitened": rng.uniform(0, 0.2, count),
        "input_spread": rng.uniform(4, 6, count),
        "output_spread": rng.uniform(6, 11, count),
        "r_init": rng.uniform(-0.5, 0.5, count) if known else np.nan,
        "mean_r": np.nan,
        "mean_r_group": np.nan,
    })
    tables = {"checkpoints": checkpoints, "profiles": profiles, "fits": fits}
    consistency = consistency_tables({"photos-r128c0-k3c3": (np.asarray(ids, dtype=object), energy)}, checkpoints,
                                     fits, ConsistencySettings())
    tables.update({name: consistency[name] for name in ("consistency", "consistency_summary", "consistency_groups")})
    # Through Arrow and back: the dtypes the plots get from read_table; columns not made up here are null.
    return {name: pa.Table.from_pandas(frame.reindex(columns=SCHEMAS[name].names), schema=SCHEMAS[name],
                                       preserve_index=False).to_pandas()
            for name, frame in tables.items()}
