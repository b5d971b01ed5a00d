"""Checkpoint files a stranger's zoo may hold, good and bad, made by the tests themselves.

Every state dict names its stem `stem.weight` (some behind wrapper prefixes);
`EXPECTED` gives each bad file's exact `skipped:` reason, with {path} for its path.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

STEM_KEY = "stem.weight"


class WritesMarker:
    """Unpickling this runs `open(marker, "w")`: code execution a safe loader must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def stem_weights(seed: int, shape=(8, 3, 5, 5)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def write_good(folder: Path, name: str, seed: int) -> Path:
    path = folder / name
    save_file({STEM_KEY: stem_weights(seed), "head.weight": torch.zeros(4, 8)}, str(path))
    return path


def write_corpus(folder: Path, marker: Path) -> dict[str, str]:
    """Write the hostile files into `folder`; return {file name: exact skipped status}."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = stem_weights(0)

    torch.save({WritesMarker(marker): 1, STEM_KEY: weights}, folder / "malicious.pt")
    with open(folder / "malicious_raw.pth", "wb") as handle:
        pickle.dump({STEM_KEY: WritesMarker(marker)}, handle, protocol=4)

    save_file({STEM_KEY: weights}, str(folder / "truncated.safetensors"))
    data = (folder / "truncated.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) - 100])

    (folder / "empty.pt").write_bytes(b"")
    (folder / "lfs.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 102400000\n")
    (folder / "page.pth").write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>\n")
    (folder / "error.bin").write_text('{"error": "Repository Not Found"}')
    save_file({"fc.weight": torch.zeros(10, 20)}, str(folder / "no_conv.safetensors"))
    save_file({STEM_KEY: stem_weights(1, (8, 3, 1, 1))}, str(folder / "one_by_one.safetensors"))
    save_file({STEM_KEY: stem_weights(2, (8, 3, 3, 5))}, str(folder / "non_square.safetensors"))
    save_file({STEM_KEY: stem_weights(3, (8, 1, 5, 5))}, str(folder / "gray.safetensors"))
    nan = stem_weights(4).clone()
    nan[0, 0, 0, 0] = float("nan")
    torch.save({"state_dict": {f"model.{STEM_KEY}": nan}}, folder / "nan.ckpt")

    refuse = "loading it would run code from the file ({why}), which this workflow refuses; {hint}"
    return {
        "malicious.pt": "{path}: " + refuse.format(why="the pickle calls io.open", hint="{hint}"),
        # Plain pickle protocol 4 is refused at its first opcode the tensor unpickler does not know.
        "malicious_raw.pth": "{path}: " + refuse.format(why="the pickle holds more than plain tensors and containers",
                                                        hint="{hint}"),
        "truncated.safetensors": "{path}: truncated safetensors file: the header promises "
                                 f"{len(data)} bytes, the file holds {len(data) - 100}; fetch it again",
        "empty.pt": "{path}: zero-byte file (an interrupted copy or download?); fetch it again",
        "lfs.safetensors": "{path}: Git LFS pointer file, not the checkpoint itself; "
                           "run `git lfs pull` in its repository",
        "page.pth": "{path}: an HTML/XML page saved as a checkpoint (a login or error page from a failed download?); "
                    "download it again",
        "error.bin": '{path}: a JSON document saved as a checkpoint (an error response?): '
                     '{"error": "Repository Not Found"}; download it again',
        "no_conv.safetensors": "{path}: no tensor named 'stem.weight' (no conv stem there?); "
                               "its first weights are ['fc.weight']; set stem_key to the stem's weight",
        "one_by_one.safetensors": "{path}: 1x1 stem only mixes colours; it has no spatial patch basis to be "
                                  "profiled in",
        "non_square.safetensors": "{path}: non-square 3x5 kernel has no square patch basis",
        "gray.safetensors": "{path}: stem takes 1 input channel(s) per filter, the photos preprocessing gives 3: "
                            "a stem for 1-channel images or a grouped conv; no patch basis fits",
        "nan.ckpt": "{path}: stem weight contains NaN or Inf",
    }


def expected_status(template: str, path: Path) -> str:
    from firstlayer_zoo.checkpoint_io import convert_hint

    return "skipped: " + template.replace("{hint}", convert_hint(path)).replace("{path}", str(path))


def onnx_conv_model(weight: np.ndarray, *, as_constant=False, group=1, strides=(2, 2), decoy=True) -> onnx.ModelProto:
    """input -> Sub(mean) -> Conv(stem) -> Relu -> Conv(second); a decoy Conv on constants comes first in node order."""
    second = np.ones((4, weight.shape[0], 3, 3), np.float32)
    nodes, initializers = [], [numpy_helper.from_array(second, "second_w"),
                               numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32), "mean")]
    if decoy:
        initializers += [numpy_helper.from_array(np.zeros((1, 3, 8, 8), np.float32), "decoy_x"),
                         numpy_helper.from_array(np.zeros((2, 3, 7, 7), np.float32), "decoy_w")]
        nodes.append(helper.make_node("Conv", ["decoy_x", "decoy_w"], ["decoy_y"], name="decoy"))
    if as_constant:
        nodes.append(helper.make_node("Constant", [], ["stem_w"], value=numpy_helper.from_array(weight, "stem_w")))
    else:
        initializers.append(numpy_helper.from_array(weight, "stem_w"))
    nodes += [
        helper.make_node("Sub", ["image", "mean"], ["centred"]),
        helper.make_node("Conv", ["centred", "stem_w"], ["stem_y"], name="stem", group=group,
                         strides=list(strides), kernel_shape=list(weight.shape[2:])),
        helper.make_node("Relu", ["stem_y"], ["act"]),
        helper.make_node("Conv", ["act", "second_w"], ["out"], name="second"),
    ]
    graph = helper.make_graph(
        nodes, "net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    return helper.make_model(graph)
