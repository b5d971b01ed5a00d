"""Keras model files written with h5py alone, laid out as Keras writes them (see firstlayer_zoo.keras_io).

`.h5`: tf.keras 2's `model.save("x.h5")`; `.keras`: Keras 3's zip. Only what a reader of the stem
looks at is written: the config, the layers' weight groups, and the usual attributes beside them.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np


def kernel(shape=(5, 5, 3, 8), seed=0) -> np.ndarray:
    """A Keras conv kernel, (kh, kw, in, out), float32."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def layer(class_name: str, name: str, **config) -> dict:
    """One layer's config entry, as Keras 3 and tf.keras both write it (name inside config)."""
    return {"module": "keras.layers", "class_name": class_name, "config": {"name": name, **config},
            "registered_name": None}


def conv(name: str, filters: int = 8, size: int = 5, strides=2, class_name: str = "Conv2D", **config) -> dict:
    defaults = {"padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1}
    return layer(class_name, name, filters=filters, kernel_size=[size, size], strides=[strides, strides],
                 **{**defaults, **config})


def model(class_name: str, name: str, layers: list[dict]) -> dict:
    """A Sequential or Functional model's config (nested models are entries of `layers` too)."""
    return {"module": "keras", "class_name": class_name, "config": {"name": name, "layers": layers},
            "registered_name": None}


def write_h5(path: Path, config: dict, weights: dict[str, list[tuple[str, np.ndarray]]]) -> Path:
    """tf.keras 2 HDF5: `weights` maps each top-level layer to its (weight name, array) in save order."""
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = "2.15.0"
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["model_config"] = json.dumps(config)
        group = handle.create_group("model_weights")
        names = [entry["config"]["name"] for entry in config["config"]["layers"]]
        group.attrs["layer_names"] = np.array([name.encode() for name in names])
        for name in names:
            layer_group = group.create_group(name)
            pairs = weights.get(name, [])
            layer_group.attrs["weight_names"] = np.array([weight.encode() for weight, _ in pairs], dtype="S")
            for weight, array in pairs:
                layer_group.create_dataset(weight, data=array)
    return path


def write_keras(path: Path, config: dict, variables: dict[str, list[np.ndarray]]) -> Path:
    """Keras 3 zip: `variables` maps a layer's path under `layers/` (e.g. `conv2d`) to its variables in order."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_group("vars")
        handle.create_group("optimizer/vars")
        for layer_path, arrays in variables.items():
            group = handle.create_group(f"layers/{layer_path}/vars")
            for index, array in enumerate(arrays):
                group.create_dataset(str(index), data=array)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.8.0", "date_saved": "2026-01-01@00:00:00"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def sequential_h5(path: Path, weight: np.ndarray, strides: int = 2) -> Path:
    """The common case: Input, Rescaling, Conv2D stem, Flatten, Dense, as tf.keras saves it."""
    kh, kw, _, out = weight.shape
    config = model("Sequential", "sequential", [
        layer("InputLayer", "input_1", batch_input_shape=[None, 32, 32, weight.shape[2]]),
        layer("Rescaling", "rescaling", scale=1 / 255, offset=0.0),
        conv("conv2d", filters=out, size=kh, strides=strides),
        layer("Flatten", "flatten"),
        layer("Dense", "dense", units=10),
    ])
    return write_h5(path, config, {
        "conv2d": [("conv2d/kernel:0", weight), ("conv2d/bias:0", np.zeros(out, np.float32))],
        "dense": [("dense/kernel:0", np.zeros((4, 10), np.float32)), ("dense/bias:0", np.zeros(10, np.float32))],
    })


def functional_keras(path: Path, weight: np.ndarray, strides: int = 2) -> Path:
    """Keras 3 Functional: a Dense first, then the Conv2D stem, then a second Conv2D (vars at conv2d_1)."""
    kh, _, _, out = weight.shape
    config = model("Functional", "functional", [
        layer("InputLayer", "input_layer", batch_shape=[None, 32, 32, weight.shape[2]]),
        layer("Dense", "mix", units=weight.shape[2]),
        conv("stem", filters=out, size=kh, strides=strides),
        conv("head", filters=4, size=3, strides=1),
    ])
    return write_keras(path, config, {
        "dense": [np.eye(weight.shape[2], dtype=np.float32), np.zeros(weight.shape[2], np.float32)],
        "conv2d": [weight, np.zeros(out, np.float32)],
        "conv2d_1": [kernel((3, 3, out, 4), seed=99), np.zeros(4, np.float32)],
    })
