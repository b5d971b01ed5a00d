"""Zoo source `keras`: saved Keras models (.h5, .keras) on disk, read with h5py (keras_io), never with Keras.

Files, metadata, sidecars and the root's boundary work as for the `folder` and `onnx` sources
(local.LocalFiles); the stem is the first convolution in the model config.
"""

from __future__ import annotations

from pathlib import Path

from ..keras_io import keras_stem, read_keras_stem
from ..records import CheckpointSpec
from ..stems import Stem, validate_conv_weight
from .base import register
from .local_files import LocalFiles, square_geometry


@register
class KerasSource(LocalFiles):
    """Keras 2 / tf.keras HDF5 models and Keras 3 .keras archives; the stem is the config's first Conv2D."""

    source = "keras"
    default_patterns = ["**/*.h5", "**/*.keras"]
    formats = ("keras",)
    stem_fields = {"layer_class": str}  # Conv2D, SeparableConv2D, ...

    def read_geometry(self, path: Path) -> dict:
        stem = keras_stem(path)
        kernel_size, in_chans = square_geometry(stem.shape)
        return {"first_conv": stem.layer, "kernel_size": kernel_size, "in_chans": in_chans, "stride": stem.stride}

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        cls.refuse_outside_root(spec)
        stem, weight = read_keras_stem(spec.locator)
        return Stem(weight=validate_conv_weight(weight, spec.uri), init=None, stride=stem.stride,
                    first_conv=stem.layer, meta={"layer_class": stem.kind})
