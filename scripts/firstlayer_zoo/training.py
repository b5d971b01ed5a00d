"""Training the `train` zoo source's runs (train_runs.TrainRun, planned by zoo_sources/train.py), init kept.

Two tasks. `photo_crops` (the default study's): which photo did a random crop
come from; a fixed, seeded sample of crops is drawn once per run, so that
random labels are a well-defined memorisation task, as in Zhang et al. 2017.
`labelled`: the classes of a labelled dataset (CIFAR, SVHN, STL-10,
Imagenette, a folder with one subfolder per class), as in the paper's own
experiments.

Speed without changing what is measured: the training images stay on the
device as uint8 and are normalised batch by batch; on a GPU the network runs
under bf16 autocast with channels_last, but the stem always computes in
float32 on float32 inputs, and every weight is kept and saved in float32.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .atomic import atomic_path
from .cifar_nets import CIFAR_NETS
from .preprocessing import Preprocessing
from .stems import torch_stem
from .train_runs import LABEL_REGIMES, TrainRun

EVALUATION_BATCH = 1024


@dataclass
class TrainingData:
    """Training images (uint8, (N, c, H, W)) with the labels the run learns; test images with their true labels."""

    images: torch.Tensor
    labels: torch.Tensor
    n_classes: int
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def first_conv_name(model: torch.nn.Module) -> str:
    """The stem a timm model's (or a CIFAR net's) pretrained_cfg names."""
    return torch_stem(model, declared_only=True)[0]


def build_model(arch: str, num_classes: int, in_chans: int, model_kwargs: dict) -> torch.nn.Module:
    """One of the paper's CIFAR nets (cifar_nets.CIFAR_NETS) by name, otherwise a timm model."""
    if arch in CIFAR_NETS:
        return CIFAR_NETS[arch](num_classes=num_classes, in_chans=in_chans, **model_kwargs)
    if "width" in model_kwargs:
        raise ValueError(f"width applies to {sorted(CIFAR_NETS)}, not to the timm model {arch}; narrow a timm "
                         "model through its model_kwargs (e.g. resnet18's channels)")
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                             in_chans=in_chans, **model_kwargs)


def regime_labels(true_labels: np.ndarray, regime: str, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """The labels a run learns under its regime (LABEL_REGIMES), drawn from `rng`."""
    if regime == "true":
        return true_labels
    if regime == "permuted":
        return rng.permutation(true_labels)
    if regime == "random":
        return rng.integers(0, n_classes, len(true_labels))
    raise ValueError(f"labels must be one of {list(LABEL_REGIMES)}, not {regime!r}")


def sample_crops(images: Sequence[np.ndarray], run: TrainRun) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed sample of crops (uint8 N, c, s, s) and their labels under the run's regime."""
    rng = np.random.default_rng(run.seed)
    size = run.crop_size
    sources = rng.integers(0, len(images), run.n_samples)
    crops = np.empty((run.n_samples, images[0].shape[0], size, size), dtype=np.uint8)
    for index, source in enumerate(sources):
        _, height, width = images[source].shape
        top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        crops[index] = images[source][:, top:top + size, left:left + size]
    labels = regime_labels(sources, run.labels, len(images), rng)
    return torch.from_numpy(crops), torch.from_numpy(labels.astype(np.int64))


def photo_crop_data(run: TrainRun, images: Sequence[np.ndarray]) -> TrainingData:
    """The photo-crop task: a fixed sample of crops of `images` (uint8 (c, H, W)), labelled by the run's regime."""
    crops, labels = sample_crops(images, run)
    return TrainingData(images=crops, labels=labels, n_classes=len(images))


def labelled_data(run: TrainRun, images: np.ndarray, labels: np.ndarray,
                  test: tuple[np.ndarray, np.ndarray] | None = None) -> TrainingData:
    """A labelled dataset's images (uint8 (N, c, H, W)) under the run's label regime; test labels stay true."""
    n_classes = int(max(labels.max(), test[1].max() if test is not None else 0)) + 1
    learnt = regime_labels(labels.astype(np.int64), run.labels, n_classes, np.random.default_rng(run.seed))
    return TrainingData(
        images=torch.from_numpy(images), labels=torch.from_numpy(learnt.astype(np.int64)), n_classes=n_classes,
        test_images=None if test is None else torch.from_numpy(test[0]),
        test_labels=None if test is None else torch.from_numpy(test[1].astype(np.int64)))


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    # contiguous() also turns channels_last weights back into the usual layout.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is cuda but torch sees no GPU here; set training.device: auto or cpu")
    return torch.device(device)


def keep_stem_float32(stem: torch.nn.Module) -> None:
    """Under autocast, run the stem in float32 on float32 inputs: its gradient is what the study measures."""
    low_precision_forward = stem.forward

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(inputs.device.type, enabled=False):
            return low_precision_forward(inputs.float())

    stem.forward = forward


class Normaliser:
    """uint8 batches to the run's normalised float32 inputs, on the device."""

    def __init__(self, preprocessing: Preprocessing, device: torch.device, channels_last: bool):
        self.mean = torch.tensor(preprocessing.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(preprocessing.std, device=device).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return ((batch.float() / 255.0 - self.mean) / self.std).contiguous(memory_format=self.memory_format)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, normalise: Normaliser,
             autocast: AbstractContextManager) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model in eval mode over every image."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(images), EVALUATION_BATCH):
        with autocast:
            logits = model(normalise(images[start:start + EVALUATION_BATCH])).float()
        target = labels[start:start + EVALUATION_BATCH]
        loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train()
    return loss / len(images), correct / len(images)


def batches(run: TrainRun, n_images: int, last: int, generator: torch.Generator, device: torch.device):
    """(position, index batch) for every training step; `position` counts the run's unit once it completes.

    An epoch's order goes to the device at once: a copy each step would make the host wait for the GPU.
    """
    if run.unit == "step":
        for step in range(1, last + 1):
            yield step, torch.randint(0, n_images, (run.batch_size,), generator=generator)
        return
    per_epoch = n_images // run.batch_size
    if per_epoch == 0:
        raise ValueError(f"zoos.{run.zoo}.training.batch_size is {run.batch_size}, more than the {n_images} "
                         "training images: no complete batch (the last partial batch is dropped); lower it")
    for epoch in range(1, last + 1):
        order = torch.randperm(n_images, generator=generator).to(device)
        for index in range(per_epoch):
            batch = order[index * run.batch_size:(index + 1) * run.batch_size]
            yield (epoch if index == per_epoch - 1 else None), batch


def train(run: TrainRun, data: TrainingData, outputs: dict[int, Path], progress: bool = True) -> dict:
    """Train one run and save a checkpoint at each position in `outputs` (0 = init); return its speed.

    Each checkpoint's header records, under "evaluation", the mean loss and the
    accuracy over the training images under the run's labels, and the accuracy
    on the test images (true labels) where there are some.
    """
    device = resolve_device(run.device)
    low_precision = run.precision == "bfloat16" or (run.precision == "auto" and device.type == "cuda")
    torch.manual_seed(run.seed)
    model = build_model(run.arch, data.n_classes, run.preprocessing.in_chans, run.model_kwargs)
    stem_name = first_conv_name(model)
    stem = model.get_submodule(stem_name)
    stride = stem.stride[0]
    if low_precision:
        keep_stem_float32(stem)
    if run.freeze_stem:
        stem.requires_grad_(False)
    channels_last = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        # cuDNN computes float32 convolutions in TF32 (a 10-bit mantissa) unless told not to: the stem, the one
        # conv in float32 under autocast, must not be. The others run in bfloat16 either way.
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=run.lr,
                                momentum=run.momentum, weight_decay=run.weight_decay)
    # Entered at every step: a disabled torch.autocast still costs about 5 % of a small CPU run's time.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if low_precision else nullcontext()
    normalise = Normaliser(run.preprocessing, device, channels_last)
    images, labels = data.images.to(device), data.labels.to(device)
    test = (data.test_images.to(device), data.test_labels.to(device)) if data.test_images is not None else None

    def keep(position: int) -> None:
        train_loss, train_accuracy = evaluate(model, images, labels, normalise, autocast)
        evaluation = {"train_loss": train_loss, "train_accuracy": train_accuracy,
                      "test_accuracy": evaluate(model, *test, normalise, autocast)[1] if test else None}
        save_checkpoint(model, outputs[position], run.metadata(position, stem_name, stride, evaluation))

    generator = torch.Generator().manual_seed(run.seed)
    last = max(outputs)
    if 0 in outputs:
        keep(0)
    model.train()
    bar = tqdm(total=last, desc=f"train {run.arch} seed {run.seed} {run.labels} labels ({run.unit}s)",
               disable=not progress, mininterval=2)
    started, steps = time.perf_counter(), 0
    for position, batch in batches(run, len(images), last, generator, device):
        batch = batch.to(device)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(normalise(images[batch])), labels[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        steps += 1
        if position is None:
            continue
        bar.update()
        if position % 25 == 0 or run.unit == "epoch":
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if position in outputs:
            keep(position)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"device": str(device), "low_precision": low_precision, "steps": steps, "seconds": seconds,
            "images_per_s": steps * run.batch_size / seconds}
