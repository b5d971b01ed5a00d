import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="session")
def photos():
    """The embedded photos at a small size, uint8 (c, H, W)."""
    from firstlayer_zoo.dataset_sources import dataset_source
    from firstlayer_zoo.preprocessing import Preprocessing

    prep = Preprocessing(resize=48)
    source = dataset_source("photos", {"source": "skimage"})
    return [prep.apply(image) for image in source.images(None)]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions would save, by path, kept open to be read."""
    from firstlayer_zoo import plots

    figures = {}
    monkeypatch.setattr(plots, "save", lambda figure, path: figures.__setitem__(str(path), figure))
    yield figures
    plots.plt.close("all")


def direct_patches(images, kernel_size, mean, std):
    """Every stride-1 patch as float64 rows in (c, kh, kw) order, normalised: the slow, obvious way."""
    rows = []
    for image in images:
        x = (image.astype(np.float64) / 255.0 - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
        windows = np.lib.stride_tricks.sliding_window_view(x, (kernel_size, kernel_size), axis=(1, 2))
        rows.append(windows.transpose(1, 2, 0, 3, 4).reshape(-1, x.shape[0] * kernel_size**2))
    return np.concatenate(rows)
