"""The training contract the paper's comparisons rest on, watched from inside a real training run.

Every image carries its split and its index in two pixels, so the tests read off each forward pass which
images the network saw, in which mode, and (through cross_entropy) with which labels: what the run
trained on, what it evaluated, and whether a `permuted` image kept its label, are facts, not chances.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from safetensors import safe_open
from safetensors.torch import load_file

from firstlayer_zoo import training
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.train_runs import TrainRun
from firstlayer_zoo.training import labelled_data, photo_crop_data, train

ROOT = Path(__file__).resolve().parents[1]
PREP = Preprocessing()
TRAIN_MARK, TEST_MARK = 10, 200  # pixel (0, 0, 0) of every image: which split it belongs to
SIZE = 32
CLASSES = 4


def _run(**changes) -> TrainRun:
    values = dict(zoo="z", arch="vgg11_bn_cifar", seed=0, labels="true", dataset="d", preprocessing=PREP,
                  steps=(0, 2), model_kwargs={"width": 0.125}, task="labelled", unit="epoch", batch_size=8,
                  lr=0.01, device="cpu", precision="float32")
    values.update(changes)
    return TrainRun(**values)


def marked(count: int, mark: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose pixel (0, 0, 0) is `mark` and (0, 0, 1) their index, with classes of equal counts."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 3, SIZE, SIZE), dtype=np.uint8)
    images[:, 0, 0, 0] = mark
    images[:, 0, 0, 1] = np.arange(count)
    return images, rng.permutation(np.arange(count) % CLASSES)


def _decode(inputs: torch.Tensor, pixel: int) -> np.ndarray:
    """A pixel of channel 0 back in uint8 units from the normalised batch the network was given."""
    values = inputs[:, 0, 0, pixel].detach().double() * PREP.std[0] + PREP.mean[0]
    return np.rint(values.numpy() * 255).astype(int)


def first_conv(path: Path) -> str:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()["first_conv"]


class Watch:
    """What one training run did: every forward pass (mode, split, image indices, targets), the optimiser steps
    taken, each checkpoint saved (its step and the optimiser steps before it), the network before its first
    training forward pass."""

    def __init__(self, monkeypatch):
        self.passes: list[dict] = []
        self.optimiser_steps = 0
        self.saved: list[tuple[int, int]] = []
        self.before_training: dict[str, torch.Tensor] | None = None
        build, save, loss = training.build_model, training.save_checkpoint, torch.nn.functional.cross_entropy

        def build_model(*args, **kwargs):
            model = build(*args, **kwargs)
            model.register_forward_pre_hook(self._forward)
            return model

        def save_checkpoint(model, path, metadata):
            self.saved.append((int(metadata["step"]), self.optimiser_steps))
            save(model, path, metadata)

        def cross_entropy(logits, target, *args, **kwargs):
            self.passes[-1]["target"] = target.numpy().copy()
            return loss(logits, target, *args, **kwargs)

        monkeypatch.setattr(training, "build_model", build_model)
        monkeypatch.setattr(training, "save_checkpoint", save_checkpoint)
        monkeypatch.setattr(torch.nn.functional, "cross_entropy", cross_entropy)
        self._handle = register_optimizer_step_post_hook(self._stepped)

    def _stepped(self, *_):
        self.optimiser_steps += 1

    def _forward(self, module, args):
        if module.training and self.before_training is None:
            self.before_training = {name: value.detach().clone() for name, value in module.state_dict().items()}
        self.passes.append({"training": module.training, "mark": _decode(args[0], 0), "index": _decode(args[0], 1),
                            "steps_before": self.optimiser_steps, "target": None})

    def close(self):
        self._handle.remove()

    def training_passes(self) -> list[dict]:
        return [one for one in self.passes if one["training"]]


@pytest.fixture
def watch(monkeypatch):
    recorder = Watch(monkeypatch)
    yield recorder
    recorder.close()


@pytest.mark.parametrize("task", ["labelled", "photo_crops"])
def test_the_initialisation_is_the_network_before_any_update_bit_for_bit(task, watch, tmp_path):
    if task == "labelled":
        run = _run(steps=(0, 2))
        data = labelled_data(run, *marked(24, TRAIN_MARK, 0))
    else:  # the default study's: a timm model on photo crops, counted in steps
        run = _run(arch="test_resnet", model_kwargs={}, task="photo_crops", unit="step", steps=(0, 3),
                   crop_size=SIZE, n_samples=32)
        data = photo_crop_data(run, [marked(1, TRAIN_MARK, seed)[0][0] for seed in range(3)])
    outputs = {position: tmp_path / f"{position}.safetensors" for position in run.steps}
    train(run, data, outputs, progress=False)
    init, last = load_file(outputs[0]), load_file(outputs[run.steps[-1]])
    assert watch.before_training is not None and sorted(init) == sorted(watch.before_training)
    for name, value in watch.before_training.items():
        assert torch.equal(init[name], value), f"{name} of the init checkpoint is not the untrained network's"
    assert watch.saved[0] == (0, 0)  # kept before any optimiser step
    stem = f"{first_conv(outputs[0])}.weight"
    assert not torch.equal(init[stem], last[stem])  # and the stem did train after it


def init_stem(seed: int, path: str) -> None:
    """Write the init checkpoint of one seed's run (a separate process calls this too)."""
    run = _run(seed=seed, steps=(0,))
    train(run, labelled_data(run, *marked(16, TRAIN_MARK, 0)), {0: Path(path)}, progress=False)


def test_seeds_give_different_initial_stems_and_one_seed_the_same_stem_in_another_process(tmp_path):
    for seed in (0, 1):
        init_stem(seed, str(tmp_path / f"here{seed}.safetensors"))
    # Another interpreter, another hash seed, its global RNGs drawn from before training starts.
    script = ("import sys; sys.path[:0] = sys.argv[1:3]; import numpy, torch, test_training_contract as t; "
              "torch.rand(5); numpy.random.rand(5); t.init_stem(0, sys.argv[3])")
    subprocess.run([sys.executable, "-c", script, str(ROOT / "tests"), str(ROOT / "scripts"),
                    str(tmp_path / "there0.safetensors")], check=True, timeout=600,
                   env={**os.environ, "PYTHONHASHSEED": "123"})
    here0, here1, there0 = (load_file(tmp_path / name) for name in
                            ("here0.safetensors", "here1.safetensors", "there0.safetensors"))
    stem = "features.0.weight"
    assert not torch.equal(here0[stem], here1[stem]), "two seeds start from the same stem"
    assert sorted(here0) == sorted(there0)
    for name in here0:
        assert torch.equal(here0[name], there0[name]), f"seed 0 gives another {name} in another process"


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_a_permuted_run_gives_each_image_one_label_at_every_epoch_and_step(unit, watch, tmp_path):
    images, labels = marked(40, TRAIN_MARK, 0)
    run = _run(labels="permuted", unit=unit, steps=(0, 1, 3) if unit == "epoch" else (0, 5, 15))
    train(run, labelled_data(run, images, labels), {step: tmp_path / f"{step}" for step in run.steps},
          progress=False)
    seen: dict[int, set] = {}
    for one in watch.passes:  # training batches, and the evaluations under the run's labels at every kept step
        for index, target in zip(one["index"], one["target"]):
            seen.setdefault(int(index), set()).add(int(target))
    assert sorted(seen) == list(range(40))
    changed = {index: targets for index, targets in seen.items() if len(targets) > 1}
    assert not changed, (f"{len(changed)} of 40 images given other labels at other epochs or steps, e.g. image "
                         f"{min(changed)}: {sorted(changed[min(changed)])}")
    learnt = np.array([seen[index].pop() for index in range(40)])
    # One shuffle of the true labels: every class keeps its count, and the labels are not the true ones.
    assert np.bincount(learnt).tolist() == np.bincount(labels).tolist()
    assert (learnt != labels).mean() > 0.3


class Oracle(torch.nn.Module):
    """A trainable net plus a fixed answer read from pixel (0, 0, 2) of each image, far larger than its logits."""

    def __init__(self, net: torch.nn.Module, classes: int):
        super().__init__()
        self.net, self.classes = net, classes
        self.pretrained_cfg = {"first_conv": "net." + net.pretrained_cfg["first_conv"]}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        answer = torch.from_numpy(_decode(inputs, 2))
        return self.net(inputs) + 1e3 * torch.nn.functional.one_hot(answer, self.classes)


def test_training_reads_the_train_split_only_and_test_accuracy_the_test_split_only(watch, monkeypatch, tmp_path):
    """Every training image answers wrong and every test image right: the accuracies say which split each saw."""
    images, labels = marked(40, TRAIN_MARK, 0)
    images[:, 0, 0, 2] = (labels + 1) % CLASSES
    test_images, test_labels = marked(24, TEST_MARK, 1)
    test_images[:, 0, 0, 2] = test_labels
    watched = training.build_model
    monkeypatch.setattr(training, "build_model", lambda arch, classes, *rest: Oracle(watched(arch, classes, *rest),
                                                                                       classes))
    run = _run(steps=(0, 1, 2))
    outputs = {step: tmp_path / f"{step}.safetensors" for step in run.steps}
    train(run, labelled_data(run, images, labels, (test_images, test_labels)), outputs, progress=False)
    for step in run.steps:
        with safe_open(str(outputs[step]), "pt") as handle:
            evaluation = json.loads(handle.metadata()["evaluation"])
        assert (evaluation["train_accuracy"], evaluation["test_accuracy"]) == (0.0, 1.0), step
    taught = watch.training_passes()
    assert taught and all((one["mark"] == TRAIN_MARK).all() for one in taught), "trained on test images"
    for one in taught:
        np.testing.assert_array_equal(one["target"], labels[one["index"]])
    tested = [one for one in watch.passes if not one["training"] and (one["mark"] == TEST_MARK).any()]
    assert len(tested) == len(run.steps) and all((one["mark"] == TEST_MARK).all() for one in tested)
    for one in tested:
        np.testing.assert_array_equal(one["target"], test_labels[one["index"]])


def test_a_checkpoint_at_step_n_follows_n_updates_of_one_batch_each(watch, tmp_path):
    images, labels = marked(40, TRAIN_MARK, 0)
    run = _run(unit="step", steps=(0, 3, 7))
    speed = train(run, labelled_data(run, images, labels), {step: tmp_path / f"{step}" for step in run.steps},
                  progress=False)
    assert watch.saved == [(0, 0), (3, 3), (7, 7)] and speed["steps"] == 7
    taught = watch.training_passes()
    assert [one["steps_before"] for one in taught] == list(range(7))
    assert all(len(one["index"]) == run.batch_size for one in taught)


def test_a_checkpoint_at_epoch_n_follows_n_passes_over_the_data_in_whole_batches(watch, tmp_path):
    images, labels = marked(50, TRAIN_MARK, 0)
    run = _run(unit="epoch", steps=(0, 1, 3), batch_size=20)
    speed = train(run, labelled_data(run, images, labels), {step: tmp_path / f"{step}" for step in run.steps},
                  progress=False)
    per_epoch = 50 // 20  # the last partial batch dropped
    assert watch.saved == [(0, 0), (1, per_epoch), (3, 3 * per_epoch)] and speed["steps"] == 3 * per_epoch
    taught = watch.training_passes()
    assert [one["steps_before"] for one in taught] == list(range(3 * per_epoch))
    for epoch in range(3):
        batches = taught[epoch * per_epoch:(epoch + 1) * per_epoch]
        indices = np.concatenate([one["index"] for one in batches])
        assert len(indices) == per_epoch * 20 and len(set(indices.tolist())) == len(indices), epoch
