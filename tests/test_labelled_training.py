"""Training on labelled data: the paper's CIFAR nets, epochs, a frozen stem, float32 stems under bf16, evaluation."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from firstlayer_zoo.cifar_nets import CIFAR_NETS
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.train_runs import TrainRun
from firstlayer_zoo.training import build_model, first_conv_name, keep_stem_float32, labelled_data, train


def _run(arch="vgg11_bn_cifar", **changes) -> TrainRun:
    values = dict(zoo="z", arch=arch, seed=0, labels="true", dataset="d", preprocessing=Preprocessing(),
                  steps=(0, 1, 2), model_kwargs={"width": 0.125}, task="labelled", unit="epoch", batch_size=16,
                  lr=0.01, device="cpu")
    values.update(changes)
    return TrainRun(**values)


def _colour_classes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 32x32 images whose class is their dominant colour channel: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 120, (n, 3, 32, 32))
    images[np.arange(n), labels] += 120
    return images.astype(np.uint8), labels


@pytest.mark.parametrize("arch,stem", [("vgg11_bn_cifar", "features.0"), ("resnet18_cifar", "conv1")])
def test_cifar_nets_have_a_3x3_stride_1_stem_named_like_timm_and_scale_with_width(arch, stem):
    model = build_model(arch, num_classes=10, in_chans=3, model_kwargs={"width": 0.5})
    assert first_conv_name(model) == stem
    conv = model.get_submodule(stem)
    assert (conv.kernel_size, conv.stride, conv.out_channels) == ((3, 3), (1, 1), 32)
    # CIFAR form: a 32x32 image keeps its size through the stem (no stride, no max-pool after it).
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert conv(torch.zeros(1, 3, 32, 32)).shape[-2:] == (32, 32)
    assert sorted(CIFAR_NETS) == ["resnet18_cifar", "vgg11_bn_cifar"]


def test_frozen_stem_is_bit_identical_at_every_kept_epoch_while_the_rest_trains(tmp_path):
    run = _run(freeze_stem=True)
    outputs = {epoch: tmp_path / f"epoch{epoch}.safetensors" for epoch in run.steps}
    train(run, labelled_data(run, *_colour_classes(64, 0)), outputs, progress=False)
    states = [load_file(outputs[epoch]) for epoch in run.steps]
    for state in states[1:]:
        assert torch.equal(state["features.0.weight"], states[0]["features.0.weight"])
        assert torch.equal(state["features.0.bias"], states[0]["features.0.bias"])
        assert not torch.equal(state["features.4.weight"], states[0]["features.4.weight"])


def test_epochs_drop_the_last_partial_batch_and_refuse_a_batch_larger_than_the_data(tmp_path):
    run = _run(steps=(0, 3), batch_size=20)
    speed = train(run, labelled_data(run, *_colour_classes(50, 0)), {3: tmp_path / "epoch3.safetensors"},
                  progress=False)
    assert speed["steps"] == 3 * (50 // 20)
    with pytest.raises(ValueError, match="batch_size is 64, more than the 50 training images"):
        run = _run(batch_size=64)
        train(run, labelled_data(run, *_colour_classes(50, 0)), {1: tmp_path / "e.safetensors"}, progress=False)


def test_under_bf16_autocast_the_stem_computes_in_float32_and_the_rest_does_not():
    model = build_model("resnet18_cifar", num_classes=3, in_chans=3, model_kwargs={"width": 0.125})
    keep_stem_float32(model.conv1)
    inputs = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.conv1(inputs).dtype == torch.float32
        assert model.layer1[0].conv1(torch.rand(2, 8, 16, 16)).dtype == torch.bfloat16
    assert model.conv1.weight.dtype == torch.float32


def test_bf16_training_keeps_and_saves_float32_weights_and_records_accuracy_above_chance(tmp_path):
    run = _run(arch="resnet18_cifar", precision="bfloat16", steps=(0, 3))
    data = labelled_data(run, *_colour_classes(96, 0), _colour_classes(60, 1))
    outputs = {epoch: tmp_path / f"epoch{epoch}.safetensors" for epoch in run.steps}
    speed = train(run, data, outputs, progress=False)
    assert speed["low_precision"]
    assert load_file(outputs[3])["conv1.weight"].dtype == torch.float32
    with safe_open(str(outputs[3]), "pt") as handle:
        metadata = handle.metadata()
    evaluation = json.loads(metadata["evaluation"])
    assert evaluation["test_accuracy"] > 0.6  # three classes: chance is 1/3
    assert evaluation["train_loss"] < np.log(3)
    assert json.loads(metadata["hyperparameters"])["precision"] == "bfloat16"
    assert metadata["first_conv"] == "conv1" and metadata["stem_stride"] == "1"
