"""The README's study configs, run as written: taken from the README itself, on files the test makes.

The folder, ONNX and Keras studies run for real, and so does the README's `python -m firstlayer_zoo
inspect` line; the timm study is fetched from an imitation of the Hub (`fetch_remote`) and then run with
HF_HUB_OFFLINE=1 and the Hub unreachable, as the README tells a cluster user to. The two studies of the
`hf` source run against the imitation serving a small Hub (tests/hf_families.py small_hub): the most
downloaded classifiers online, every fine-tune of a base model fetched first and then run offline.
"""

import os
import re
import socket
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save

import firstlayer_zoo
from firstlayer_zoo.shards import load_analyses
from hostile_corpus import onnx_conv_model
from keras_files import functional_keras, sequential_h5
from hf_families import FINE_TUNES, small_hub
from loopback import HubImitation
from workflow_helpers import ROOT, snakemake

pytestmark = pytest.mark.slow


def readme_studies() -> dict[str, str]:
    """{file name: YAML text} of every block in the README that starts `# own-study: <name>.yaml`."""
    text = (ROOT / "README.md").read_text()
    return {name: body for body, name in re.findall(r"```yaml\n(# own-study: (\S+\.yaml).*?)```", text, re.DOTALL)}


def test_the_readme_holds_the_six_studies():
    studies = readme_studies()
    assert set(studies) == {"folder.yaml", "onnx.yaml", "keras.yaml", "timm.yaml", "hub_classifiers.yaml",
                            "hub_finetunes.yaml"}
    assert [yaml.safe_load(body)["zoos"].popitem()[1]["source"] for body in studies.values()] == \
        ["folder", "onnx", "keras", "timm", "hf", "hf"]


def stem(seed: int) -> torch.Tensor:
    weight = np.random.default_rng(seed).normal(size=(64, 3, 7, 7)).astype(np.float32)
    weight[:, :, 3, 3] += 4  # some structure, as trained stems have
    return torch.from_numpy(weight)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the README's files in it: its four configs, checkpoints/, exports/ and keras_models/."""
    workdir = tmp_path_factory.mktemp("own_study")
    for name, body in readme_studies().items():
        (workdir / name).write_text(body)
    (workdir / "checkpoints").mkdir()
    for index, name in enumerate(["resnet_a.pt", "resnet_b.pth", "resnet_c.pt"]):
        torch.save({"conv1.weight": stem(index), "bn1.weight": torch.ones(64), "fc.weight": torch.zeros(10, 512)},
                   workdir / "checkpoints" / name)
    torch.save({"features.0.weight": stem(9)}, workdir / "checkpoints" / "vgg.pt")  # another stem key: skipped
    (workdir / "exports" / "more").mkdir(parents=True)
    onnx.save(onnx_conv_model(stem(3).numpy()), str(workdir / "exports" / "net_a.onnx"))
    onnx.save(onnx_conv_model(stem(4).numpy()), str(workdir / "exports" / "more" / "net_b.onnx"))
    (workdir / "keras_models").mkdir()
    # Keras stores kernels as (kh, kw, in, out).
    sequential_h5(workdir / "keras_models" / "tf2.h5", stem(5).numpy().transpose(2, 3, 1, 0))
    functional_keras(workdir / "keras_models" / "keras3.keras", stem(6).numpy().transpose(2, 3, 1, 0))
    return workdir


def tables(workdir):
    return {name: pd.read_parquet(workdir / "results" / "tables" / f"{name}.parquet")
            for name in ("checkpoints", "fits", "consistency_summary")}


def test_folder_study_as_written(workdir):
    result = snakemake(workdir, "--cores", "2", config=workdir / "folder.yaml")
    found = tables(workdir)
    checkpoints = found["checkpoints"].set_index("checkpoint")
    assert (checkpoints.loc[[f"mine/resnet_{x}" for x in ("a.pt", "b.pth", "c.pt")], "status"] == "ok").all()
    assert "no tensor named 'conv1.weight'" in checkpoints.loc["mine/vgg.pt", "status"]
    assert checkpoints["arch"].isna().all()
    assert len(found["fits"]) == 3
    assert not found["consistency_summary"]["relation"].str.contains("same").any()
    console = result.stdout + result.stderr
    assert "zoo mine (folder): 4 checkpoint(s), 3 ok, 1 skipped" in console
    assert "1 skipped: no tensor named 'conv1.weight'" in console


def test_onnx_study_as_written(workdir):
    result = snakemake(workdir, "--cores", "2", config=workdir / "onnx.yaml")
    checkpoints = tables(workdir)["checkpoints"]
    assert sorted(checkpoints["checkpoint"]) == ["exported/more--net_b.onnx", "exported/net_a.onnx"]
    assert (checkpoints["status"] == "ok").all() and checkpoints["zoo"].eq("exported").all()  # the demo is not run
    assert "zoo exported (onnx): 2 checkpoint(s), 2 ok, 0 skipped" in result.stdout + result.stderr


def test_keras_study_as_written(workdir):
    result = snakemake(workdir, "--cores", "2", config=workdir / "keras.yaml")
    found = tables(workdir)
    checkpoints = found["checkpoints"].set_index("checkpoint")
    assert sorted(checkpoints.index) == ["keras_models/keras3.keras", "keras_models/tf2.h5"]
    assert (checkpoints["status"] == "ok").all()
    chosen = checkpoints.loc[["keras_models/keras3.keras", "keras_models/tf2.h5"]]
    assert chosen["first_conv"].tolist() == ["stem", "conv2d"] and chosen["stride"].tolist() == [2, 2]
    assert len(found["fits"]) == 2
    assert "zoo keras_models (keras): 2 checkpoint(s), 2 ok, 0 skipped" in result.stdout + result.stderr
    # The notebook API on the same file, with the zoo's preprocessing, gives the workflow's own rows.
    options = yaml.safe_load(readme_studies()["keras.yaml"])["zoos"]["keras_models"]
    alone = firstlayer_zoo.analyse(workdir / "keras_models" / "tf2.h5", dataset="photos", name="tf2.h5",
                                   preprocessing=options["preprocessing"], cache_dir=workdir / "cache")
    profiles = pd.read_parquet(workdir / "results" / "tables" / "profiles.parquet")
    in_study = profiles[profiles["checkpoint"] == "keras_models/tf2.h5"]
    for column in ("eigenvalue", "energy"):
        np.testing.assert_allclose(alone.profile[column], in_study[column], rtol=1e-9)
    fits = found["fits"].set_index("checkpoint").loc["keras_models/tf2.h5"]
    for column in ("tau", "fit_r", "frac_whitened"):
        assert alone.fit[column].item() == pytest.approx(fits[column], rel=1e-9)


def test_inspect_command_as_written(workdir):
    """The README's `python -m firstlayer_zoo inspect` line, run in the folder that has its checkpoint."""
    command = re.search(r"^python -m firstlayer_zoo inspect .*$", (ROOT / "README.md").read_text(), re.M).group(0)
    run = subprocess.run([sys.executable, *command.split()[1:]], cwd=workdir, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "scripts"),
                              "XDG_CACHE_HOME": str(workdir / "cache")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "checkpoints/resnet_a.pt: stem conv1 (64 filters, 3x7x7, stride unknown) in the photos basis" in run.stdout
    assert re.search(r"^ +fit_r -?[0-9.]+", run.stdout, re.M), run.stdout
    assert (workdir / "plots" / "resnet_a.pt.png").read_bytes().startswith(b"\x89PNG")


def test_timm_study_fetched_with_network_then_run_without(workdir, monkeypatch):
    from firstlayer_zoo.timm_table import load_timm_table

    hf_home = workdir / "hf_home"
    models = yaml.safe_load(readme_studies()["timm.yaml"])["zoos"]["pretrained"]["models"]
    with HubImitation() as hub:
        for index, tag in enumerate(models):
            row = load_timm_table()[tag]
            hub.add_file(f"timm/{tag}", "model.safetensors", save({f"{row['first_conv']}.weight": stem(10 + index)}))
        fetched = snakemake(workdir, "--cores", "2", "fetch_remote", config=workdir / "timm.yaml",
                            env={"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home)})
    assert "fetch_checkpoint" in fetched.stderr + fetched.stdout
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = snakemake(workdir, "--cores", "2", config=workdir / "timm.yaml",
                       env={"HF_ENDPOINT": unreachable, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    checkpoints = tables(workdir)["checkpoints"]
    assert sorted(checkpoints["checkpoint"]) == sorted(f"pretrained/{tag}" for tag in models)
    assert (checkpoints["status"] == "ok").all()
    assert f"zoo pretrained (timm): {len(models)} checkpoint(s), {len(models)} ok" in result.stdout + result.stderr


def test_without_network_the_remote_job_fails_alone_with_one_clear_line(workdir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}"
    mixed = yaml.safe_load(readme_studies()["timm.yaml"])
    mixed["zoos"].update(yaml.safe_load(readme_studies()["folder.yaml"])["zoos"])
    mixed["outdir"] = "results_mixed"
    (workdir / "mixed.yaml").write_text(yaml.safe_dump(mixed))
    result = snakemake(workdir, "--cores", "2", "--keep-going", config=workdir / "mixed.yaml", check=False,
                       env={"HF_ENDPOINT": unreachable, "HF_HOME": str(workdir / "empty_hf_home")})
    assert result.returncode != 0
    console = result.stdout + result.stderr
    lines = [line for line in console.splitlines() if f"network: cannot connect to {unreachable}" in line]
    assert lines and all("HF_ENDPOINT" in line and "fetch_remote" in line for line in lines), console[-3000:]
    assert "Traceback" not in console and "httpx" not in console  # the line, not the client's traceback
    # The folder zoo's results are all there: its shards ran, with every checkpoint analysed.
    shards = list((workdir / "results_mixed" / "analyses" / "mine").glob("*.npz"))
    analysed = {analysis.checkpoint.name: analysis.status for path in shards for analysis in load_analyses(path)}
    assert all(analysed.get(name) == "ok" for name in ("resnet_a.pt", "resnet_b.pth", "resnet_c.pt")), analysed


def unreachable_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_hub_classifiers_study_as_written(workdir):
    with HubImitation() as hub:
        small_hub(hub)
        result = snakemake(workdir, "--cores", "2", config=workdir / "hub_classifiers.yaml",
                           env={"HF_ENDPOINT": hub.url, "HF_HOME": str(workdir / "hf_home_classifiers")})
        served = [repo for repo, held in hub.repos.items() if held["info"]["pipeline_tag"] == "image-classification"]
    found = tables(workdir)
    checkpoints = found["checkpoints"].set_index("checkpoint")
    assert sorted(checkpoints.index) == sorted(f"classifiers/{repo.replace('/', '--')}" for repo in served)
    assert (checkpoints["source"] == "hf").all()
    assert checkpoints.loc["classifiers/fay--custom-vit", "status"].startswith(
        "skipped: fay/custom-vit: model type 'my_vit' is not in hf_stems.csv; set stem_key")
    ok = checkpoints[checkpoints["status"] == "ok"]
    assert len(ok) == len(served) - 1 and set(ok["arch"]) == {"vit", "resnet", "mobilevit"}
    assert ok["init_note"].isna().all() and not ok["init_known"].any()  # no init asked for
    assert (ok["bytes_fetched"] < ok["file_size"]).all()  # the stem's bytes, not the files
    assert len(found["fits"]) == len(ok) and checkpoints["basis"].nunique() == 3
    assert f"zoo classifiers (hf): {len(served)} checkpoint(s), {len(ok)} ok, 1 skipped" in \
        result.stdout + result.stderr


def test_hub_finetunes_study_fetched_with_network_then_run_without(workdir):
    hf_home = workdir / "hf_home_finetunes"
    study = yaml.safe_load(readme_studies()["hub_finetunes.yaml"])["zoos"]["vit_finetunes"]
    (base,) = study["models"]
    with HubImitation() as hub:
        small_hub(hub)
        fetched = snakemake(workdir, "--cores", "2", "fetch_remote", config=workdir / "hub_finetunes.yaml",
                            env={"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home)})
    assert "list_zoo" in fetched.stdout + fetched.stderr
    result = snakemake(workdir, "--cores", "2", config=workdir / "hub_finetunes.yaml",
                       env={"HF_ENDPOINT": unreachable_endpoint(), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    found = tables(workdir)
    checkpoints = found["checkpoints"].set_index("checkpoint")
    tunes = [f"vit_finetunes/{repo.replace('/', '--')}" for repo, of in FINE_TUNES.items() if of == base]
    assert sorted(checkpoints.index) == sorted([f"vit_finetunes/{base.replace('/', '--')}", *tunes])
    assert (checkpoints["status"] == "ok").all()
    assert checkpoints.loc[tunes, "init_known"].all() and (checkpoints.loc[tunes, "base_model"] == base).all()
    assert checkpoints.loc[tunes, "init_note"].str.startswith(f"base model {base}@").all()
    assert checkpoints.loc[f"vit_finetunes/{base.replace('/', '--')}", "init_note"] == \
        "none: its card names no base_model"
    fits = found["fits"].set_index("checkpoint")
    assert fits.loc[tunes, "r_init"].notna().all()  # trained versus base: what fine-tuning moved
    summary = found["consistency_summary"]
    assert (summary["relation"] == "trained vs its own initialisation").any()
    assert (summary["relation"] == "same arch, same base model").any()
    assert f"zoo vit_finetunes (hf): {len(tunes) + 1} checkpoint(s), {len(tunes) + 1} ok" in \
        result.stdout + result.stderr
