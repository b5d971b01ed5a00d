"""Checkpoint files a stranger's zoo may hold, good and bad, made by the tests themselves.

Every state dict names its stem `stem.weight` (some behind wrapper prefixes);
`write_corpus` returns each bad file's exact `skipped:` reason, with {path} for its path.
Beside the zoo folder it plants `outside/creds.json` holding SECRET, which
symlinks and sidecars in the zoo point to: it must never be read, so SECRET
(and its first bytes read as a number) must appear nowhere in any output.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from safetensors.torch import save_file

STEM_KEY = "stem.weight"
SECRET = "hunter2-TOPSECRET-credential"


def secret_traces() -> list[str]:
    """Every form in which the secret file's bytes could leak into a message."""
    heads = [json.dumps({"token": SECRET}).encode()[:8], SECRET.encode()[:8]]
    return [SECRET, *(str(struct.unpack("<Q", head)[0]) for head in heads)]


def write_safetensors_raw(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def write_safetensors_entry(path: Path, entry: object) -> Path:
    return write_safetensors_raw(path, json.dumps({STEM_KEY: entry}).encode(), bytes(8 * 3 * 5 * 5 * 4))


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

    # Round two. Files that crashed their job (or leaked) before they became status rows.
    depth = 100_000
    write_safetensors_raw(folder / "deep.safetensors", b'{"a":' * depth + b"1" + b"}" * depth)
    write_safetensors_entry(folder / "entry_not_object.safetensors", 5)
    write_safetensors_entry(folder / "no_offsets.safetensors", {"dtype": "F32", "shape": [8, 3, 5, 5]})
    write_safetensors_entry(folder / "wrong_byte_count.safetensors",
                            {"dtype": "F32", "shape": [8, 3, 5, 5], "data_offsets": [0, 100]})
    save_file({STEM_KEY: torch.zeros(0, 3, 5, 5)}, str(folder / "zero_channels.safetensors"))
    save_file({STEM_KEY: torch.zeros(8, 3, 5, 5)}, str(folder / "all_zero.safetensors"))
    (folder / "brackets.bin").write_bytes(b"[" * 500_000)
    # A header length past the default limit in a sparse file: refused before its bytes are read.
    huge = 64 << 20
    with open(write_safetensors_raw(folder / "huge_header.safetensors", b"{"), "r+b") as handle:
        handle.seek(0)
        handle.write(struct.pack("<Q", huge))
        handle.truncate(8 + huge + 8)
    torch.save({STEM_KEY: weights.to_sparse()}, folder / "sparse.pt")
    torch.save({STEM_KEY: torch.quantize_per_tensor(weights, 0.1, 0, torch.qint8)}, folder / "quantized.pt")
    torch.save({STEM_KEY: weights.to("meta")}, folder / "meta.pt")
    torch.save({STEM_KEY: torch.nested.nested_tensor([weights[0], weights[1]])}, folder / "nested.pt")
    torch.save({STEM_KEY: weights.to(torch.complex64)}, folder / "complex.pt")
    for dtype in (torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn):
        save_file({STEM_KEY: weights.to(dtype)}, str(folder / f"{str(dtype).removeprefix('torch.')}.safetensors"))
    # The leak: links and sidecars reaching a credentials file outside the zoo.
    outside = folder.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "creds.json").write_text(json.dumps({"token": SECRET}))
    (outside / "secret.key").write_text(SECRET)
    os.symlink(outside / "creds.json", folder / "linked.bin")
    os.symlink(outside / "creds.json", folder / "linked_json.safetensors")
    os.symlink(outside / "secret.key", folder / "linked_key.safetensors")
    for name, init in (("absolute_init", str(outside / "creds.json")), ("climbing_init", "../outside/creds.json")):
        save_file({STEM_KEY: stem_weights(5)}, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps({"init": init}))
    save_file({STEM_KEY: stem_weights(6)}, str(folder / "linked_sidecar.safetensors"))
    os.symlink(outside / "creds.json", folder / "linked_sidecar.json")

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
        "error.bin": "{path}: a JSON document saved as a checkpoint (an error response?); open it to see what "
                     "the server said, then download it again",
        "no_conv.safetensors": "{path}: no tensor named 'stem.weight' (no conv stem there?); "
                               "its first weights are ['fc.weight']; set stem_key to the stem's weight",
        "one_by_one.safetensors": "{path}: 1x1 stem only mixes colours; it has no spatial patch basis to be "
                                  "profiled in",
        "non_square.safetensors": "{path}: non-square 3x5 kernel has no square patch basis",
        "gray.safetensors": "{path}: stem takes 1 input channel(s) per filter, the photos preprocessing gives 3: "
                            "a stem for 1-channel images or a grouped conv; no patch basis fits",
        "nan.ckpt": "{path}: stem weight contains NaN or Inf",
        "deep.safetensors": "{path}: corrupt safetensors header (JSON nested too deeply); fetch it again",
        "entry_not_object.safetensors": "{path}: corrupt safetensors header: the entry of tensor 'stem.weight' "
                                        "lacks a dtype, shape or data_offsets; fetch it again",
        "no_offsets.safetensors": "{path}: corrupt safetensors header: the entry of tensor 'stem.weight' "
                                  "lacks a dtype, shape or data_offsets; fetch it again",
        "wrong_byte_count.safetensors": "{path}: corrupt safetensors header: tensor 'stem.weight' of shape "
                                        "[8, 3, 5, 5] (F32) takes 100 bytes in the file, not the 4 per element "
                                        "its shape needs; fetch it again",
        "zero_channels.safetensors": "{path}: stem weight has shape (0, 3, 5, 5): no filters to profile",
        "all_zero.safetensors": "{path}: the stem's weights are all zero (an untrained or pruned layer?)",
        "brackets.bin": "{path}: not a checkpoint format this workflow reads "
                        "(safetensors; PyTorch .pt/.pth/.bin/.ckpt saved by torch.save; ONNX; Keras .h5/.keras)",
        "huge_header.safetensors": f"{{path}}: safetensors header is {huge:,} bytes, over the limit of "
                                   f"{16 << 20:,} (limits.safetensors_header_mb); raise "
                                   "limits.safetensors_header_mb in the config if you trust it",
        **{f"{name}.pt": f"{{path}}: the stem 'stem.weight' is a {kind} tensor, not dense weights; "
                         "save the dense float weights (tensor.to_dense() / dequantize())"
           for name, kind in (("sparse", "torch.sparse_coo (sparse)"), ("quantized", "quantized"),
                              ("meta", "meta (no data)"), ("nested", "nested"))},
        **{name: f"{{path}}: the stem 'stem.weight' is stored as {dtype}, not as float16/bfloat16/float32/float64 "
                 "weights (a quantized, boolean or complex tensor); export the float weights"
           for name, dtype in (("complex.pt", "complex64"), ("int8.safetensors", "I8"),
                               ("uint8.safetensors", "U8"), ("bool.safetensors", "BOOL"),
                               ("float8_e4m3fn.safetensors", "F8_E4M3"))},
        **{name: f"{{path}}: a symlink to a file outside the zoo's root {folder.resolve()}, which this workflow "
                 "does not read; copy the file into the root instead"
           for name in ("linked.bin", "linked_json.safetensors", "linked_key.safetensors")},
        "linked_sidecar.safetensors": f"{folder / 'linked_sidecar.json'}: a symlink to a file outside the zoo's "
                                      f"root {folder.resolve()}, which this workflow does not read; copy the file "
                                      "into the root instead",
        **{f"{name}.safetensors": f"{folder / name}.json: its init {init!r} lies outside the zoo's root "
                                  f"{folder.resolve()}, which this workflow does not read; give a path relative "
                                  "to the root, or set `init` in the config"
           for name, init in (("absolute_init", str(outside / "creds.json")),
                              ("climbing_init", "../outside/creds.json"))},
    }


def identity_basis(kernel_size: int, in_chans: int):
    """A PatchBasis whose eigenvectors are the pixel axes, for analysing stems without patch statistics."""
    from firstlayer_zoo.basis import PatchBasis

    dimension = in_chans * kernel_size * kernel_size
    eigenvalues = np.linspace(2.0, 1.0, dimension)
    return PatchBasis(kernel_size=kernel_size, in_chans=in_chans, mean=np.zeros(dimension),
                      covariance=np.diag(eigenvalues), eigenvalues=eigenvalues, eigenvectors=np.eye(dimension),
                      n_patches=1, n_images=1)


def expected_status(template: str, path: Path) -> str:
    from firstlayer_zoo.checkpoint_io import convert_hint

    if template == OK:
        return OK
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


def write_onnx_corpus(folder: Path) -> dict[str, str]:
    """Hostile ONNX models into `folder`; return {file name: exact skipped status}, with {path} for its path."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = stem_weights(30).numpy()

    one_input = onnx_conv_model(weights, decoy=False)
    stem_node = next(node for node in one_input.graph.node if node.name == "stem")
    del stem_node.input[1:]
    onnx.save(one_input, str(folder / "one_input.onnx"))

    cycle = onnx_conv_model(weights, decoy=False)
    stem_node = next(node for node in cycle.graph.node if node.name == "stem")
    stem_node.input[1] = "loop_a"
    cycle.graph.node.extend([helper.make_node("Identity", ["loop_b"], ["loop_a"]),
                             helper.make_node("Identity", ["loop_a"], ["loop_b"])])
    onnx.save(cycle, str(folder / "identity_cycle.onnx"))

    (folder.parent / "outside_weights.bin").write_bytes(weights.tobytes())
    external = onnx_conv_model(weights, decoy=False)
    tensor = next(tensor for tensor in external.graph.initializer if tensor.name == "stem_w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../outside_weights.bin"), ("offset", "0"), ("length", str(weights.nbytes))):
        tensor.external_data.add(key=key, value=value)
    onnx.save(external, str(folder / "external_outside.onnx"))

    onnx.save(onnx_conv_model(np.ones((8, 3, 5, 5), np.int8)), str(folder / "int8.onnx"))
    return {
        "one_input.onnx": "{path}: the stem Conv node 'stem' has no weight input; export the model again",
        "identity_cycle.onnx": "{path}: the stem weight comes through a cycle of Identity nodes; export it again",
        "external_outside.onnx": "{path}: the stem weight 'stem_w' names an external data file outside the model's "
                                 "folder ('../outside_weights.bin'), which this workflow does not read; copy it "
                                 "next to the model",
        "int8.onnx": "{path}: the stem 'stem_w' is stored as int8, not as float weights (a quantized model?); "
                     "export the float model",
    }


# Round three: single files that stopped a whole study (a basis planned from a declared shape, a sidecar, a name),
# and files that must stay ordinary rows however odd. Each writer makes its files in a zoo's root and returns
# {file name: exact status template} ({path}: the file's path; OK: analysed). The combined study
# (tests/test_local_workflow.py) runs every writer of ROUND_THREE in the zoo of its source, so a new case is a
# writer and one line in that table.
OK = "ok"
# Kernels a 48-pixel image (the combined study's resize) cannot hold; the files claiming them hold no weights.
HUGE = 3000
DELETED_DURING_RUN = "deleted_during_run.safetensors"


def misfit(size: int, side: int = 48) -> str:
    return (f"{{path}}: its stem's {size}x{size} kernel is larger than the images it would be profiled on ({side} "
            "pixels on their shorter side after the zoo's preprocessing), so no patch of that size exists; check "
            "the file, or remove it from the zoo")


def write_declared_shapes(folder: Path) -> dict[str, str]:
    """State dicts whose stem shape, not their bytes, would plan a basis no image can give."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({STEM_KEY: torch.zeros(0, 3, HUGE, HUGE)}, str(folder / "empty_stem.safetensors"))
    # One float stored, a 3000x3000 stem declared through zero strides.
    torch.save({STEM_KEY: torch.zeros(1).expand(8, 3, HUGE, HUGE)}, folder / "zero_stride.pt")
    save_file({STEM_KEY: stem_weights(40, (4, 3, 64, 64))}, str(folder / "kernel_larger_than_images.safetensors"))
    return {"empty_stem.safetensors": misfit(HUGE), "zero_stride.pt": misfit(HUGE),
            "kernel_larger_than_images.safetensors": misfit(64)}


def write_odd_metadata(folder: Path) -> dict[str, str]:
    """Sidecars and names that refused the whole study, and metadata only some files have."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, sidecar in (("huge_seed", json.dumps({"seed": 10**30})), ("bad_sidecar", '{"seed": '),
                          ("list_sidecar", "[1, 2]"), ("with_arch", json.dumps({"arch": "resnet_like"}))):
        write_good(folder, f"{name}.safetensors", seed=41)
        (folder / f"{name}.json").write_text(sidecar)
    long_step = "step" + "9" * 30
    write_good(folder, f"{long_step}.safetensors", seed=42)
    return {
        "huge_seed.safetensors": f"{folder / 'huge_seed.json'}: its seed is not an integer within 64 bits; "
                                 "fix or remove it",
        "bad_sidecar.safetensors": f"{folder / 'bad_sidecar.json'}: sidecar metadata is not valid JSON "
                                   "(JSONDecodeError); fix or remove it",
        "list_sidecar.safetensors": f"{folder / 'list_sidecar.json'}: sidecar metadata must be a JSON object of "
                                    "fields such as seed, step; fix or remove it",
        f"{long_step}.safetensors": "{path}: the step that path_pattern finds in its path is not an integer within "
                                    "64 bits; fix path_pattern or rename the file",
        "with_arch.safetensors": OK,
    }


def write_odd_names_and_scales(folder: Path) -> dict[str, str]:
    """Braces in names (Snakemake's wildcards), finite stems far from 1, and a file deleted while the study runs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "{wild}").mkdir(exist_ok=True)
    write_good(folder / "{wild}", "in_braces.safetensors", seed=43)
    write_good(folder, "{zoo}.safetensors", seed=44)
    for name, exponent in (("tiny", -700), ("huge", 700)):
        save_file({STEM_KEY: torch.ldexp(stem_weights(45).double(), torch.tensor(exponent))},
                  str(folder / f"{name}.safetensors"))
    write_good(folder, DELETED_DURING_RUN, seed=46)
    return {"{wild}--in_braces.safetensors": OK, "{zoo}.safetensors": OK, "tiny.safetensors": OK,
            "huge.safetensors": OK,
            DELETED_DURING_RUN: "{path}: no such file (deleted or moved since the study was planned?); check the "
                                "path or the glob in the config, and run snakemake again"}


def onnx_declaring(shape: tuple[int, ...]) -> onnx.ModelProto:
    """A model whose stem initializer declares `shape` and holds no bytes."""
    model = onnx_conv_model(stem_weights(47).numpy(), decoy=False)
    tensor = next(tensor for tensor in model.graph.initializer if tensor.name == "stem_w")
    tensor.ClearField("raw_data")
    del tensor.dims[:]
    tensor.dims.extend(shape)
    return model


def write_onnx_declared_shapes(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_declaring((0, 3, HUGE, HUGE)), str(folder / "zero_filters.onnx"))
    onnx.save(onnx_declaring((8, 3, HUGE, HUGE)), str(folder / "declared_huge.onnx"))
    return {"zero_filters.onnx": misfit(HUGE), "declared_huge.onnx": misfit(HUGE)}


def write_keras_declared_shapes(folder: Path) -> dict[str, str]:
    """A Keras model whose chunked kernel was created at 3000x3000 and never written (a few KB on disk)."""
    import h5py
    from keras_files import conv, kernel, model, sequential_h5, write_h5

    folder.mkdir(parents=True, exist_ok=True)
    sequential_h5(folder / "good.h5", kernel((5, 5, 3, 8), seed=48))
    config = model("Sequential", "sequential", [conv("conv2d", filters=8, size=HUGE)])
    path = write_h5(folder / "unwritten_kernel.h5", config, {"conv2d": [("conv2d/kernel:0", np.zeros(1))]})
    with h5py.File(path, "a") as handle:
        group = handle["model_weights/conv2d"]
        del group["conv2d/kernel:0"]
        group.create_dataset("conv2d/kernel:0", shape=(HUGE, HUGE, 3, 8), dtype="float32", chunks=(64, 64, 3, 8))
    return {"good.h5": OK, "unwritten_kernel.h5": misfit(HUGE)}


def write_archive_runs(folder: Path) -> dict[str, str]:
    """A zoo archive's runs (`<run>/params.json`, `<run>/checkpoint_<step>/checkpoints`): one good, the others with
    a params file that is not JSON, a seed and a step beyond 64 bits. Templates name the file by its path in the
    archive ({root}: where the archive is unpacked)."""
    steps = {"00_good": (0, 10), "01_bad_params": (0, 10), "02_huge_seed": (0, 10), "03_huge_step": (0, 10**30)}
    params = {"00_good": json.dumps({"seed": 1}), "01_bad_params": '{"seed": 2', "02_huge_seed":
              json.dumps({"seed": 10**30}), "03_huge_step": json.dumps({"seed": 4})}
    for index, (run, run_steps) in enumerate(steps.items()):
        (folder / run).mkdir(parents=True)
        (folder / run / "params.json").write_text(params[run])
        for step in run_steps:
            (folder / run / f"checkpoint_{step:06d}").mkdir()
            torch.save({STEM_KEY: stem_weights(50 + index + step % 7)},
                       folder / run / f"checkpoint_{step:06d}" / "checkpoints")
    huge = f"checkpoint_{10**30:06d}"
    return {
        "00_good-step000010": OK,
        "01_bad_params-step000010": "{root}/01_bad_params/params.json: not valid JSON (JSONDecodeError); fix it in "
                                   "the archive",
        "02_huge_seed-step000010": "{root}/02_huge_seed/params.json: its seed is not an integer within 64 bits; fix "
                                  "it in the archive, or the zoo's keys",
        f"03_huge_step-{huge}": f"{{root}}/03_huge_step/{huge}/checkpoints: the step that step_pattern finds in its "
                                "path is not an integer within 64 bits; fix it in the archive, or the zoo's keys",
    }


# The writers of each zoo source, as the combined study runs them (see above).
ROUND_THREE = {
    "folder": [write_declared_shapes, write_odd_metadata, write_odd_names_and_scales],
    "onnx": [write_onnx_declared_shapes],
    "keras": [write_keras_declared_shapes],
    "archive": [write_archive_runs],
}
# Files a folder dataset may hold besides its images: each writer writes into the dataset's folder and returns
# nothing; whatever they are, the study must still run and nothing outside the folder may reach an output.
def image_linked_out_of_the_folder(folder: Path) -> None:
    """An image that is a symlink to a picture outside the dataset's folder: skipped unopened."""
    outside = folder.parent / "outside_the_dataset"
    outside.mkdir(exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), 7, dtype=np.uint8)).save(outside / "secret.png")
    (folder / "linked_out.png").symlink_to(outside / "secret.png")


DATASET_CASES: list = [image_linked_out_of_the_folder]
