"""firstlayer_zoo.analyse and `python -m firstlayer_zoo inspect`: one model, any form, the workflow's tables."""

import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import firstlayer_zoo
from conftest import direct_patches
from firstlayer_zoo.stems import StemError
from firstlayer_zoo.tables import SCHEMAS
from hostile_corpus import onnx_conv_model
from keras_files import functional_keras, sequential_h5
from workflow_helpers import ROOT

SCRIPTS = ROOT / "scripts"


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of two small RGB images (smooth, so the basis has structure) and the arrays in it."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    arrays = []
    for index, (height, width) in enumerate([(20, 24), (18, 18)]):
        noise = rng.normal(size=(height + 4, width + 4, 3))
        smooth = sum(noise[y:y + height, x:x + width] for y in range(4) for x in range(4))
        array = np.clip(128 + 20 * smooth, 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"image{index}.png")
        arrays.append(array.transpose(2, 0, 1))
    return folder, arrays


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "firstlayer-zoo"


def test_a_model_its_state_dict_and_its_files_give_the_same_tables(tmp_path, images, cache):
    folder, _ = images
    model = tiny_model()
    weight = model[0].weight.detach().numpy()
    save_file({key: value.contiguous() for key, value in model.state_dict().items()},
              tmp_path / "tiny.safetensors")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    onnx.save(onnx_conv_model(weight), str(tmp_path / "tiny.onnx"))
    sequential_h5(tmp_path / "tiny.h5", weight.transpose(2, 3, 1, 0))  # Keras keeps (kh, kw, in, out)
    functional_keras(tmp_path / "tiny.keras", weight.transpose(2, 3, 1, 0))
    forms = {"model": model, "state dict": model.state_dict(),
             **{suffix: tmp_path / f"tiny.{suffix}" for suffix in ("safetensors", "pt", "onnx", "h5", "keras")}}
    results = {form: firstlayer_zoo.analyse(value, dataset=folder, name="tiny") for form, value in forms.items()}
    reference = results["model"]
    assert list(reference.profile.columns) == SCHEMAS["profiles"].names
    assert list(reference.fit.columns) == SCHEMAS["fits"].names
    assert list(reference.checkpoint.columns) == SCHEMAS["checkpoints"].names
    assert (reference.checkpoint["status"].item(), reference.checkpoint["stride"].item()) == ("ok", 2)
    assert len(reference.profile) == 27 and reference.fit["checkpoint"].tolist() == ["notebook/tiny"]
    for form, result in results.items():
        pd.testing.assert_frame_equal(result.profile, reference.profile, obj=form)
        pd.testing.assert_frame_equal(result.fit, reference.fit, obj=form)
    assert len(list((cache / "bases").glob("*.npz"))) == 1  # one basis for all seven


def test_profile_matches_a_direct_computation_from_the_patches(images, cache):
    """Eigenvalues of the normalised patches' covariance, and the stem's RMS gain along each eigenvector."""
    folder, arrays = images
    model = tiny_model(seed=1)
    mean, std = (0.5, 0.4, 0.45), (0.2, 0.25, 0.3)
    result = firstlayer_zoo.analyse(model, dataset=folder, preprocessing={"mean": mean, "std": std})
    patches = direct_patches(arrays, 3, mean, std)
    values, vectors = np.linalg.eigh(np.cov(patches, rowvar=False, bias=True))
    values, vectors = values[::-1], vectors[:, ::-1]
    filters = model[0].weight.detach().double().numpy().reshape(8, -1)
    energy = np.sqrt(np.mean((filters @ vectors) ** 2, axis=0))
    np.testing.assert_allclose(result.profile["eigenvalue"], values, rtol=1e-9)
    np.testing.assert_allclose(result.profile["energy"], energy / energy.max(), rtol=1e-6)


def test_the_second_call_reads_the_cached_basis(images, cache, monkeypatch):
    from firstlayer_zoo import patchstats

    folder, _ = images
    first = firstlayer_zoo.analyse(tiny_model(), dataset=folder)
    (cached,) = (cache / "bases").glob("*.npz")

    def computed_again(*args, **kwargs):
        raise AssertionError("the basis was computed again")

    monkeypatch.setattr(patchstats, "source_basis", computed_again)
    pd.testing.assert_frame_equal(firstlayer_zoo.analyse(tiny_model(), dataset=folder).profile, first.profile)
    other_preprocessing = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    with pytest.raises(AssertionError, match="computed again"):
        firstlayer_zoo.analyse(tiny_model(), dataset=folder, preprocessing=other_preprocessing)
    assert list((cache / "bases").glob("*.npz")) == [cached] and not list(cache.rglob(".*"))  # no partial file


def test_what_cannot_be_analysed_is_said(tmp_path, images):
    folder, _ = images
    with pytest.raises(StemError, match="no 4-D weight"):
        firstlayer_zoo.analyse({"fc.weight": torch.zeros(2, 3)}, dataset=folder)
    with pytest.raises(StemError, match="has no Conv2d"):
        firstlayer_zoo.analyse(torch.nn.Linear(3, 2), dataset=folder)
    with pytest.raises(StemError, match="grouped stem"):
        firstlayer_zoo.analyse(torch.nn.Conv2d(3, 6, 3, groups=3), dataset=folder)
    with pytest.raises(StemError, match=re.escape(f"{tmp_path / 'absent.pt'}: no such file")):
        firstlayer_zoo.analyse(tmp_path / "absent.pt", dataset=folder)


def test_importing_the_package_loads_neither_torch_nor_the_api():
    code = ("import sys, firstlayer_zoo; assert 'torch' not in sys.modules and 'pandas' not in sys.modules; "
            "firstlayer_zoo.analyse; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SCRIPTS)})


def inspect(*args, cwd, cache_home):
    return subprocess.run([sys.executable, "-m", "firstlayer_zoo", "inspect", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SCRIPTS), "XDG_CACHE_HOME": str(cache_home)})


def test_inspect_prints_the_fit_and_draws_it(tmp_path, images):
    folder, _ = images
    model = tiny_model()
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, tmp_path / "tiny.safetensors")
    run = inspect(tmp_path / "tiny.safetensors", "--dataset", folder, "--out", tmp_path / "plots", cwd=tmp_path,
                  cache_home=tmp_path / "cache")
    assert run.returncode == 0, run.stderr
    fit = firstlayer_zoo.analyse(model, dataset=folder, cache_dir=tmp_path / "other").fit.iloc[0]
    for column in ("tau", "tau_s1", "fit_r", "frac_whitened"):
        assert re.search(rf"^ *{column} {fit[column]:.4g}$", run.stdout, re.M), (column, run.stdout)
    assert "stem 0 (8 filters, 3x3x3, stride unknown)" in run.stdout
    png = tmp_path / "plots" / "tiny.safetensors.png"
    assert png.read_bytes().startswith(b"\x89PNG") and Image.open(png).size[0] > 200


def test_inspect_refuses_with_exit_code_2(tmp_path, images):
    folder, _ = images
    torch.save({"fc.weight": torch.zeros(2, 3)}, tmp_path / "mlp.pt")
    for path, reason in ((tmp_path / "absent.pt", f"{tmp_path / 'absent.pt'}: no such file"),
                         (tmp_path / "mlp.pt", f"{tmp_path / 'mlp.pt'}: no 4-D weight (no conv stem)")):
        run = inspect(path, "--dataset", folder, cwd=tmp_path, cache_home=tmp_path / "cache")
        assert run.returncode == 2 and run.stderr.startswith(f"cannot inspect: {reason}"), run.stderr
        assert "Traceback" not in run.stderr and not list(tmp_path.glob("*.png"))


@pytest.mark.slow  # the photos' basis at k=7: tens of seconds
def test_the_readme_notebook_snippet_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## In a notebook"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    run = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SCRIPTS), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                              "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-3000:]
    header, row = run.stdout.splitlines()[:2]
    assert header.split() == ["tau", "tau_s1", "fit_r", "frac_whitened"] and len(row.split()) == 5, run.stdout
    assert len(list((tmp_path / "cache" / "firstlayer-zoo" / "bases").glob("*.npz"))) == 1
