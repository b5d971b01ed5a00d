"""Read the stem of a saved Keras model with h5py alone: no TensorFlow, no Keras, no code from the file.

Two formats:
- `.h5` (Keras 2 / tf.keras `model.save("x.h5")`, also Keras 3's legacy HDF5): the model config is the
  JSON root attribute `model_config`; each layer's weights sit in the group `model_weights/<layer>`,
  whose attribute `weight_names` lists them (`conv2d/kernel:0`, or Keras 3's `model/conv2d/kernel`).
- `.keras` (Keras 3 `model.save("x.keras")`): a zip of `config.json`, `metadata.json` and
  `model.weights.h5`, where a layer's variables are `layers/<name>/vars/0, 1, ...`; `<name>` is its
  class name in snake case, numbered within its model (`conv2d`, `conv2d_1`, ...), and a nested
  model's layers sit under its own `layers/<name>/layers/...`.

The stem is the first convolution in the config's layer order (a nested Sequential or Functional model
is searched in place). Keras stores a Conv2D kernel as (kh, kw, in, out) whatever the layer's
`data_format`, so channels_first models read the same way; it is returned as (out, in, kh, kw). A
SeparableConv2D stem is read as the full filter bank it computes (depthwise then pointwise); a
DepthwiseConv2D or grouped stem has no c*k*k filters and is refused. As elsewhere, no message quotes
the file's contents: layer names and weight paths stay out of them.
"""

from __future__ import annotations

import json
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .checkpoint_io import (HDF5_SIGNATURE, KERAS_CONFIG, ZIP_SIGNATURE, CheckpointError, refuse_non_float_dtype,
                            sniff)
from .limits import MB
from .stems import StemError

KERAS_WEIGHTS = "model.weights.h5"
# A model config is a few MB even for large models; more is a corrupt or hostile file.
CONFIG_LIMIT = 64 * MB
# Keras class names of the layers read as a stem, and those refused with a reason.
CONV2D = {"Conv2D", "Convolution2D"}
SEPARABLE = {"SeparableConv2D", "SeparableConvolution2D"}
REFUSED_CONVS = {
    "DepthwiseConv2D": "a DepthwiseConv2D: each filter sees one input channel, so no c*k*k patch basis fits",
    "Conv2DTranspose": "a Conv2DTranspose, which upsamples rather than filters patches",
    "Conv1D": "a Conv1D, which has no 2-D patch basis",
    "Conv3D": "a Conv3D, which has no 2-D patch basis",
    "ConvLSTM2D": "a ConvLSTM2D, a recurrent layer rather than a filter bank",
}
MODELS = {"Sequential", "Functional", "Model"}
SAVE_AGAIN = "save the model again with model.save()"
# Soft links followed on the way to the stem's kernel before the file is called corrupt (a loop, say).
SOFT_LINK_HOPS = 32


@dataclass(frozen=True)
class KerasStem:
    """The first convolution of a Keras model, and where its kernel(s) are stored."""

    layer: str
    kind: str  # the Keras class name
    weights: tuple[str, ...]  # HDF5 paths: the kernel, or the depthwise and pointwise kernels
    shape: tuple[int, ...]  # (out, in, kh, kw) of the filter bank it computes
    stride: int | None


@contextmanager
def _opened(path: Path) -> Iterator[tuple[dict, object, bool]]:
    """(model config, h5py file of the weights, whether it is the legacy .h5 layout)."""
    import h5py

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; check the path or the glob in the config")
    with open(path, "rb") as handle:
        head = handle.read(len(HDF5_SIGNATURE))
    if head == HDF5_SIGNATURE:
        with _h5_file(h5py, path, path) as weights:
            yield _legacy_config(weights, path), weights, True
        return
    if not head.startswith(ZIP_SIGNATURE):
        kind = sniff(path)  # names an LFS pointer, an HTML page, an empty file ... for what it is
        raise CheckpointError(f"{path}: a {kind} file, not a Keras .h5 or .keras model; list it under a zoo of "
                              f"source {'onnx' if kind == 'onnx' else 'folder'}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(f"{path}: a truncated or corrupt zip file, not a readable .keras model; "
                              "copy or save it again") from None
    with archive:
        names = set(archive.namelist())
        if KERAS_CONFIG not in names:
            raise CheckpointError(f"{path}: a zip without {KERAS_CONFIG}: not a Keras 3 .keras model (a PyTorch "
                                  "file? list it under a zoo of source folder)")
        if KERAS_WEIGHTS not in names:
            raise CheckpointError(f"{path}: a .keras file without {KERAS_WEIGHTS} (saved in another weights "
                                  f"format?); {SAVE_AGAIN}")
        config = _parse_config(_member(archive, KERAS_CONFIG, path), path)
        try:
            member = archive.open(KERAS_WEIGHTS)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
            raise CheckpointError(f"{path}: {KERAS_WEIGHTS} cannot be opened inside the zip (corrupt?); "
                                  "copy or save it again") from None
        with member, _h5_file(h5py, member, path) as weights:
            yield config, weights, False


@contextmanager
def _h5_file(h5py, source, path: Path):
    try:
        handle = h5py.File(source, "r")
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: a truncated or corrupt HDF5 file; copy or save it again") from None
    with handle:
        yield handle


def _member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    size = archive.getinfo(name).file_size
    if size > CONFIG_LIMIT:
        raise CheckpointError(f"{path}: its {name} claims {size} bytes, over the {CONFIG_LIMIT} a model config "
                              "takes (corrupt?); save the model again")
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise CheckpointError(f"{path}: {name} is truncated or corrupt inside the zip; copy or save it again") \
            from None


def _legacy_config(weights, path: Path) -> dict:
    raw = weights.attrs.get("model_config")
    if raw is None:
        raise CheckpointError(f"{path}: an HDF5 file without a Keras model_config (weights only, from "
                              f"save_weights?); {SAVE_AGAIN}")
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if not isinstance(raw, (bytes, str)) or len(raw) > CONFIG_LIMIT:
        raise CheckpointError(f"{path}: its model_config is not a JSON text of at most {CONFIG_LIMIT} bytes; "
                              f"{SAVE_AGAIN}")
    return _parse_config(raw, path)


def _parse_config(raw: bytes | str, path: Path) -> dict:
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: corrupt Keras model config (not JSON); {SAVE_AGAIN}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt Keras model config (JSON nested too deeply); {SAVE_AGAIN}") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise CheckpointError(f"{path}: the Keras model config is not a model's (no class_name and config); "
                              f"{SAVE_AGAIN}")
    return config


def snake_case(class_name: str) -> str:
    """Keras 3's name for a layer's weights group: its class name in snake case (`Conv2D` -> `conv2d`)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass(frozen=True)
class _Found:
    entry: dict  # the layer's config entry
    keras3_path: str  # its group in a .keras weights file, relative to the top `layers` group
    legacy_group: str  # its group under model_weights in an .h5 file (a nested model's, for its layers)
    nested: bool


def _first_conv(model: dict, keras3_prefix: str = "", legacy_group: str | None = None) -> _Found | None:
    layers = model.get("config", {}).get("layers")
    if not isinstance(layers, list):
        return None
    used: dict[str, int] = {}
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            continue
        kind = entry["class_name"]
        base = snake_case(kind)
        # Keras 3 numbers same-class layers within each model (InputLayer is no exception, nor a problem).
        used[base] = used.get(base, -1) + 1
        keras3 = f"{keras3_prefix}{base}" + (f"_{used[base]}" if used[base] else "")
        name = _layer_name(entry)
        if kind in MODELS:
            found = _first_conv(entry, f"{keras3}/layers/", legacy_group or name)
            if found is not None:
                return found
        elif kind in CONV2D or kind in SEPARABLE or kind in REFUSED_CONVS:
            return _Found(entry, keras3, legacy_group or name, legacy_group is not None)
    return None


def _layer_name(entry: dict) -> str:
    name = entry.get("config", {}).get("name", entry.get("name"))
    return name if isinstance(name, str) else ""


def _attribute_list(group, name: str) -> list[str]:
    """A string-list attribute, which Keras splits into name0, name1, ... when it is large."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, index = [], 0
        while f"{name}{index}" in group.attrs:
            chunks.append(group.attrs[f"{name}{index}"])
            index += 1
    return [value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            for chunk in chunks for value in np.atleast_1d(chunk)]


def _legacy_weight(group, layer: str, variable: str, nested: bool, path: Path) -> str:
    """The path in `group` of one variable (`kernel`, `depthwise_kernel` ...) of `layer`, from `weight_names`."""
    names = _attribute_list(group, "weight_names")
    ends = [name for name in names if re.sub(r":\d+$", "", name).split("/")[-1] == variable]
    if nested:  # a nested model's group holds all its layers' weights: keep the stem layer's own
        ends = [name for name in ends if re.sub(r":\d+$", "", name).split("/")[-2:-1] == [layer]]
    if len(ends) != 1:
        raise CheckpointError(f"{path}: the stem layer's {variable} is {'not' if not ends else 'ambiguously'} "
                              f"listed in its weight_names; {SAVE_AGAIN}")
    return f"{group.name}/{ends[0]}"


def _strides(config: dict) -> int | None:
    strides = config.get("strides", config.get("subsample", 1))
    strides = [strides] if isinstance(strides, int) else strides
    if isinstance(strides, list) and strides and len(set(strides)) == 1 and isinstance(strides[0], int):
        return strides[0]
    return None


def _locate(config: dict, weights, legacy: bool, path: Path) -> KerasStem:
    found = _first_conv(config)
    if found is None:
        raise StemError(f"{path}: no Conv2D layer in the Keras model config (no conv stem)")
    kind, layer_config = found.entry["class_name"], found.entry.get("config", {})
    if kind in REFUSED_CONVS:
        raise StemError(f"{path}: the first convolution is {REFUSED_CONVS[kind]}")
    groups = layer_config.get("groups", 1)
    if groups != 1:
        raise StemError(f"{path}: grouped stem (groups={groups}): each filter sees a part of the input channels; "
                        "no c*k*k patch basis fits")
    variables = ("depthwise_kernel", "pointwise_kernel") if kind in SEPARABLE else ("kernel",)
    if legacy:
        group = _node(weights, f"model_weights/{found.legacy_group}", path)
        paths = tuple(_legacy_weight(group, _layer_name(found.entry), variable, found.nested, path)
                      for variable in variables)
    else:
        # Keras 2.13's name is the second; asked of the link itself, so that none is followed to ask.
        layers = "layers" if weights.get("layers", getlink=True) is not None else "_layer_checkpoint_dependencies"
        paths = tuple(f"{layers}/{found.keras3_path}/vars/{index}" for index in range(len(variables)))
    shapes = [_dataset(weights, weight, path).shape for weight in paths]
    if any(len(shape) != 4 for shape in shapes):
        raise StemError(f"{path}: the stem's kernel has shape {shapes[0]}, not (kh, kw, in, out)")
    kernel_size = layer_config.get("kernel_size")
    kernel_size = [kernel_size] * 2 if isinstance(kernel_size, int) else kernel_size
    if isinstance(kernel_size, list) and list(shapes[0][:2]) != kernel_size:
        raise StemError(f"{path}: the stem's kernel is stored as {shapes[0]}, which is not (kh, kw, in, out) for "
                        f"its kernel_size {kernel_size} (a Keras 1 channels-first kernel?); {SAVE_AGAIN} in Keras 2 "
                        "or later")
    kh, kw, in_chans, out = shapes[0]
    if kind in SEPARABLE:
        out = shapes[1][3]
    return KerasStem(layer=_layer_name(found.entry), kind=kind, weights=paths, shape=(out, in_chans, kh, kw),
                     stride=_strides(layer_config))


def _node(weights, name: str, path: Path):
    """An object of this file itself, reached without following any link out of it (see _walk)."""
    return _walk(weights, name, path, 0)[0]


def _walk(weights, name: str, path: Path, hops: int) -> tuple[object, list[str]]:
    """(object, its path of hard links) at `name`, one link at a time: hard links stay in the file, a soft
    link's target is walked the same way (through whatever links it names), and anything else (an external
    link, or a soft link that reaches one, however deep) is refused before it is followed."""
    import h5py

    node, where = weights["/"], []
    for part in [part for part in name.split("/") if part and part != "."]:
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if link is None:
            raise CheckpointError(f"{path}: the stem layer's weights are missing from the file; {SAVE_AGAIN}")
        if isinstance(link, h5py.HardLink):
            node, where = node[part], [*where, part]
        elif isinstance(link, h5py.SoftLink):
            if hops >= SOFT_LINK_HOPS:
                raise CheckpointError(f"{path}: the stem's weights sit behind a loop or a chain of over "
                                      f"{SOFT_LINK_HOPS} soft links (corrupt?); {SAVE_AGAIN}")
            target = link.path if link.path.startswith("/") else "/".join([*where, link.path])
            node, where = _walk(weights, target, path, hops + 1)
        else:
            raise CheckpointError(f"{path}: the stem's weights link to another file, which this workflow does not "
                                  "read; save the model again with its weights inside")
    return node, where


def _dataset(weights, name: str, path: Path):
    """The stem's kernel; external raw storage and virtual datasets (other files' bytes) are refused."""
    import h5py

    node = _node(weights, name, path)
    if not isinstance(node, h5py.Dataset):
        raise CheckpointError(f"{path}: the stem's kernel is not an array; {SAVE_AGAIN}")
    if node.is_virtual or node.external:
        raise CheckpointError(f"{path}: the stem's kernel is stored outside the file (virtual or external "
                              "storage), which this workflow does not read; save the model again")
    return node


def keras_stem(path: str | Path) -> KerasStem:
    """The stem of a Keras model from its config and the kernel's shape (no weights read)."""
    path = Path(path)
    with _opened(path) as (config, weights, legacy):
        return _locate(config, weights, legacy, path)


def read_keras_stem(path: str | Path) -> tuple[KerasStem, np.ndarray]:
    """The stem of a Keras model and its filter bank as float64 (out, in, kh, kw)."""
    path = Path(path)
    with _opened(path) as (config, weights, legacy):
        stem = _locate(config, weights, legacy, path)
        arrays = []
        for name in stem.weights:
            dataset = _dataset(weights, name, path)
            if dataset.dtype.kind != "f":
                refuse_non_float_dtype(str(dataset.dtype), "kernel", path)
            try:
                arrays.append(np.asarray(dataset[()], dtype=np.float64))
            except (OSError, ValueError, TypeError):
                raise CheckpointError(f"{path}: the stem's kernel cannot be read (truncated or corrupt); "
                                      "copy or save it again") from None
    if stem.kind in SEPARABLE:
        depthwise, pointwise = arrays  # (kh, kw, in, m) and (1, 1, in * m, out)
        kh, kw, in_chans, multiplier = depthwise.shape
        # Depthwise output channel c * m + j feeds the pointwise conv; composed, each output sees every input.
        pointwise = pointwise.reshape(in_chans, multiplier, -1)
        return stem, np.einsum("yxcj,cjo->ocyx", depthwise, pointwise)
    return stem, np.ascontiguousarray(arrays[0].transpose(3, 2, 0, 1))
