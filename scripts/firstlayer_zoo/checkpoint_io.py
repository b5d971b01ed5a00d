"""Read tensors from checkpoint files without ever executing code from them.

safetensors files are parsed from their JSON header and only the tensors asked
for are read; PyTorch pickles (.pt, .pth, .bin, Lightning .ckpt) go through
`torch.load(weights_only=True, mmap=True)`, whose unpickler refuses every
global outside plain tensors and containers. A file that is not a checkpoint
at all (empty, a Git LFS pointer, an HTML or JSON error page, truncated) is
named for what it is before any parser sees it (sniff, which also names ONNX
and Keras files, for their own sources). An ONNX model's stem is the first
Conv reached from the graph input, read from its protobuf without running it.
No error message quotes a file's bytes: a zoo may link or point to files that
are not its own.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .limits import current as current_limits, refuse_over
from .stems import StemError, validate_conv_weight

# Prefixes that training wrappers put before every parameter name:
# DataParallel/DDP, Lightning modules, torch.compile, EMA and other holders.
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.", "net.", "network.")
# Keys under which trainers nest the state dict inside a checkpoint dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
SNIFF_BYTES = 1024
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
KERAS_CONFIG = "config.json"  # the model config at the top of a Keras 3 .keras zip
JSON_PAGE_LIMIT = 1 << 20
# Stems are analysed in float64; other dtypes (quantized ints, masks, float8, complex) are not weights to profile.
FLOAT_SAFETENSORS_DTYPES = {"F16", "BF16", "F32", "F64"}
SAFETENSORS_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                          "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


class CheckpointError(StemError):
    """A checkpoint file that cannot be read safely; the message names the file and what to do."""


def convert_hint(path: str | Path) -> str:
    path = str(path)
    return (
        "if you trust the file, convert it once to safetensors and point the config at the result: "
        "python -c \"import torch, safetensors.torch as st; "
        f"sd = torch.load('{path}', weights_only=False); sd = sd.get('state_dict', sd); "
        "st.save_file({k: v.contiguous() for k, v in sd.items() if torch.is_tensor(v)}, "
        f"'{Path(path).with_suffix('.safetensors')}')\""
    )


def sniff(path: str | Path) -> str:
    """The file's format ('safetensors', 'torch', 'onnx', 'keras'), or a CheckpointError saying what it really is.

    'keras' is any HDF5 file (Keras 2's .h5; keras_io refuses one that holds no model config) and a zip with a
    Keras model config (Keras 3's .keras); other zips are torch.save's.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (deleted or moved since the study was planned?); check the "
                              "path or the glob in the config, and run snakemake again")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: zero-byte file (an interrupted copy or download?); fetch it again")
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    text = head.lstrip()
    if text.startswith(b"version https://git-lfs.github.com/spec/"):
        raise CheckpointError(
            f"{path}: Git LFS pointer file, not the checkpoint itself; run `git lfs pull` in its repository")
    lowered = text[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        raise CheckpointError(
            f"{path}: an HTML/XML page saved as a checkpoint (a login or error page from a failed download?); "
            "download it again")
    if text.startswith((b"{", b"[")) and size <= JSON_PAGE_LIMIT:
        try:
            json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        else:
            raise CheckpointError(
                f"{path}: a JSON document saved as a checkpoint (an error response?); open it to see what the "
                "server said, then download it again")
    if head.startswith(HDF5_SIGNATURE) or (head.startswith(ZIP_SIGNATURE) and _zip_holds(path, KERAS_CONFIG)):
        return "keras"
    if head.startswith(ZIP_SIGNATURE) or head.startswith(b"\x80"):
        return "torch"
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        return "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint format this workflow reads "
        "(safetensors; PyTorch .pt/.pth/.bin/.ckpt saved by torch.save; ONNX; Keras .h5/.keras)")


def _zip_holds(path: Path, name: str) -> bool:
    """Whether a zip lists `name`; an unreadable one does not (its reader says what is wrong with it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return name in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length <= size - 8 and head[8:9] == b"{"


def safetensors_header_length(prefix: bytes, size: int | None, source: str) -> int:
    """The JSON header's length from a safetensors file's first 8 bytes, checked against its size and the limit."""
    if len(prefix) < 8:
        raise CheckpointError(f"{source}: truncated safetensors file ({size} bytes); fetch it again")
    (length,) = struct.unpack("<Q", prefix[:8])
    if size is not None and length > size - 8:
        # The length is the file's own first 8 bytes: not quoted, they may be anything's.
        raise CheckpointError(
            f"{source}: truncated or not a safetensors file: its header length field exceeds the file's "
            f"{size} bytes; fetch it again")
    refuse_over(f"{source}: safetensors header", length, current_limits().header_bytes, "safetensors_header_mb",
                CheckpointError)
    return length


def safetensors_header(path: str | Path) -> dict[str, dict]:
    """The tensor entries of a safetensors header (name -> dtype, shape, data_offsets), checked against the size."""
    return _safetensors_header_and_metadata(Path(path))[0]


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata a safetensors file's header carries (`__metadata__`), read as its header is checked."""
    return _safetensors_header_and_metadata(Path(path))[1]


def _safetensors_header_and_metadata(path: Path) -> tuple[dict[str, dict], dict]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        length = safetensors_header_length(handle.read(8), size, str(path))
        raw = handle.read(length)
    header, metadata = parse_safetensors_header(raw, str(path))
    data_end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if 8 + length + data_end > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file: the header promises {8 + length + data_end} bytes, "
            f"the file holds {size}; fetch it again")
    return header, metadata


def parse_safetensors_header(raw: bytes, source: str) -> tuple[dict[str, dict], dict]:
    """A safetensors JSON header's tensor entries, each checked (dtype, shape, offsets, bytes = shape x dtype),
    and its `__metadata__`."""
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{source}: corrupt safetensors header (not JSON); fetch it again") from None
    except RecursionError:
        raise CheckpointError(f"{source}: corrupt safetensors header (JSON nested too deeply); fetch it again") \
            from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: corrupt safetensors header (not a JSON object); fetch it again")
    metadata = header.pop("__metadata__", None)
    for name, entry in header.items():
        if not _valid_entry(entry):
            raise CheckpointError(f"{source}: corrupt safetensors header: the entry of tensor {name!r} lacks a "
                                  "dtype, shape or data_offsets; fetch it again")
        start, end = entry["data_offsets"]
        item = SAFETENSORS_ITEM_BYTES.get(entry["dtype"])
        if item is not None and end - start != item * int(np.prod(entry["shape"], dtype=object)):
            raise CheckpointError(
                f"{source}: corrupt safetensors header: tensor {name!r} of shape {entry['shape']} "
                f"({entry['dtype']}) takes {end - start} bytes in the file, not the {item} per element its shape "
                "needs; fetch it again")
    return header, metadata if isinstance(metadata, dict) else {}


def _valid_entry(entry: object) -> bool:
    def natural(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    return (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list) and all(natural(n) for n in entry["shape"])
            and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
            and all(natural(n) for n in entry["data_offsets"])
            and entry["data_offsets"][0] <= entry["data_offsets"][1])


def refuse_non_float_dtype(dtype: str, key: str, path: str | Path) -> None:
    """Stems must be floating-point weights; `dtype` in safetensors' spelling."""
    if dtype not in FLOAT_SAFETENSORS_DTYPES:
        raise CheckpointError(
            f"{path}: the stem {key!r} is stored as {dtype}, not as float16/bfloat16/float32/float64 weights "
            "(a quantized, boolean or complex tensor); export the float weights")


TORCH_DTYPES = {"torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float32": "F32", "torch.float64": "F64"}


def _checked_torch_tensor(tensor: object, key: str, path: Path):
    """The stem tensor of a state dict, refused unless a dense, real, floating tensor with its data at hand."""
    import torch

    if not torch.is_tensor(tensor):
        raise CheckpointError(f"{path}: {key!r} is a {type(tensor).__name__}, not a tensor")
    for kind, odd in (("nested", tensor.is_nested), ("quantized", tensor.is_quantized),
                      ("meta (no data)", tensor.is_meta),
                      (f"{tensor.layout} (sparse)", tensor.layout != torch.strided)):
        if odd:
            raise CheckpointError(f"{path}: the stem {key!r} is a {kind} tensor, not dense weights; "
                                  "save the dense float weights (tensor.to_dense() / dequantize())")
    refuse_non_float_dtype(TORCH_DTYPES.get(str(tensor.dtype), str(tensor.dtype).removeprefix("torch.")), key, path)
    return tensor


def load_torch_state_dict(path: str | Path) -> Mapping[str, object]:
    """The state dict inside a PyTorch pickle, loaded with weights_only=True (memory-mapped where possible)."""
    import pickle

    import torch

    path = Path(path)
    with open(path, "rb") as handle:
        # Only zip-format files (torch >= 1.6) can be memory-mapped; older ones are read whole.
        is_zip = handle.read(4) == b"PK\x03\x04"
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"the pickle calls {named.group(1)}" if named else "the pickle holds more than plain tensors and containers"
        raise CheckpointError(
            f"{path}: loading it would run code from the file ({what}), which this workflow refuses; "
            f"{convert_hint(path)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch file ({first}); fetch or copy it again") from None
    return _unwrap_state_dict(loaded, path)


def _unwrap_state_dict(loaded: object, path: Path) -> Mapping[str, object]:
    import torch

    node = loaded
    for _ in range(4):
        if not isinstance(node, Mapping):
            break
        if any(torch.is_tensor(value) for value in node.values()):
            return node
        nested = next((node[key] for key in STATE_DICT_KEYS if isinstance(node.get(key), Mapping)), None)
        if nested is None:
            break
        node = nested
    raise CheckpointError(
        f"{path}: holds no state dict of tensors (looked at the top level and under {', '.join(STATE_DICT_KEYS)}); "
        "save `model.state_dict()` instead")


def strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def resolve_key(keys: Iterable[str], wanted: str, path: str | Path) -> str:
    """The key in the file that names `wanted`, up to wrapper prefixes (`module.`, `model.`, `_orig_mod.`, ...)."""
    keys = list(keys)
    if wanted in keys:
        return wanted
    target = strip_wrappers(wanted)
    matches = [key for key in keys if strip_wrappers(key) == target]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CheckpointError(f"{path}: {wanted!r} matches several tensors {matches}; give the full key as stem_key")
    weights = [key for key in keys if key.endswith(".weight")][:6]
    raise CheckpointError(
        f"{path}: no tensor named {wanted!r} (no conv stem there?); its first weights are {weights}; "
        "set stem_key to the stem's weight")


def tensor_shape(path: str | Path, wanted: str) -> tuple[str, tuple[int, ...]]:
    """(resolved key, shape) of one tensor, reading as little as the format allows."""
    kind = sniff(path)
    if kind == "safetensors":
        header = safetensors_header(path)
        key = resolve_key(header, wanted, path)
        refuse_non_float_dtype(header[key]["dtype"], key, path)
        return key, tuple(int(n) for n in header[key]["shape"])
    if kind == "torch":
        state = load_torch_state_dict(path)
        key = resolve_key(state, wanted, path)
        return key, tuple(int(n) for n in _checked_torch_tensor(state[key], key, Path(path)).shape)
    raise _listed_under_its_source(path, kind)


def _listed_under_its_source(path: str | Path, kind: str) -> CheckpointError:
    """An ONNX or Keras model given where a state dict was expected: its own zoo source reads it."""
    return CheckpointError(f"{path}: {'an ONNX' if kind == 'onnx' else 'a Keras'} model; list it under a zoo with "
                           f"`source: {kind}`")


def read_tensor(path: str | Path, wanted: str) -> tuple[str, np.ndarray]:
    """(resolved key, float64 array) of one tensor; only that tensor's bytes are read where the format allows."""
    import torch

    kind = sniff(path)
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open

        header = safetensors_header(path)
        key = resolve_key(header, wanted, path)
        refuse_non_float_dtype(header[key]["dtype"], key, path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensor = handle.get_tensor(key)
        except SafetensorError as error:
            raise CheckpointError(f"{path}: corrupt safetensors file ({error}); fetch it again") from None
    elif kind == "torch":
        state = load_torch_state_dict(path)
        key = resolve_key(state, wanted, path)
        tensor = _checked_torch_tensor(state[key], key, Path(path))
    else:
        raise _listed_under_its_source(path, kind)
    return key, tensor.detach().to(dtype=torch.float64).numpy()


def read_conv_weight(path: str | Path, key: str) -> np.ndarray:
    """The conv weight `key` of a state-dict file, checked as a stem (stems.validate_conv_weight)."""
    _, weight = read_tensor(path, key)
    return validate_conv_weight(weight, str(path))


def as_conv_weight(array: np.ndarray, patch_size: int | None, layout: str, source: str) -> np.ndarray:
    """A conv weight as stored, or a linear patch embedding (out, c*k*k) reshaped to (out, c, k, k)."""
    if array.ndim != 2:
        return array
    if not patch_size:
        raise StemError(
            f"{source}: stem weight has shape {tuple(array.shape)}: a linear patch embedding? "
            "set patch_size in the zoo's config to read it as a conv")
    out, features = array.shape
    channels, remainder = divmod(features, patch_size * patch_size)
    if remainder or channels == 0:
        raise StemError(
            f"{source}: linear stem takes {features} features, not a multiple of patch_size^2 = {patch_size ** 2}")
    if layout == "hwc":
        return array.reshape(out, patch_size, patch_size, channels).transpose(0, 3, 1, 2)
    return array.reshape(out, channels, patch_size, patch_size)


def conv_shape(shape: tuple[int, ...], patch_size: int | None) -> tuple[int, ...]:
    """The shape as_conv_weight would give, from a shape alone (for planning)."""
    if len(shape) == 2 and patch_size and shape[1] % (patch_size * patch_size) == 0:
        return (shape[0], shape[1] // (patch_size * patch_size), patch_size, patch_size)
    return shape


@dataclass(frozen=True)
class OnnxStem:
    """The first Conv node reached from an ONNX graph's input, and where its weight is stored."""

    node: str
    weight_name: str
    shape: tuple[int, ...]
    group: int
    stride: int | None


def _onnx_model(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    sniff(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable ONNX model, truncated or corrupt ({error}); export it again") \
            from None


def _onnx_stem_and_weight(path: Path):
    """(OnnxStem, TensorProto of its weight) without loading external data."""
    from onnx import AttributeProto, helper

    graph = _onnx_model(path).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [value.name for value in graph.input if value.name not in initializers]
    seen = set(frontier)
    conv = None
    while frontier and conv is None:
        following = []
        for name in frontier:
            for node in consumers.get(name, []):
                if node.op_type == "Conv" and node.input and node.input[0] == name:
                    conv = node
                    break
                for output in node.output:
                    if output not in seen:
                        seen.add(output)
                        following.append(output)
            if conv is not None:
                break
        frontier = following
    if conv is None:
        raise StemError(f"{path}: no Conv node is reached from the graph input (no conv stem)")
    if len(conv.input) < 2 or not conv.input[1]:
        raise StemError(f"{path}: the stem Conv node {conv.name!r} has no weight input; export the model again")
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in conv.attribute}
    weight_name = conv.input[1]
    followed = {weight_name}  # a cycle of Identity nodes must not loop forever
    while weight_name not in initializers and weight_name in producers \
            and producers[weight_name].op_type == "Identity" and producers[weight_name].input:
        weight_name = producers[weight_name].input[0]
        if weight_name in followed:
            raise StemError(f"{path}: the stem weight comes through a cycle of Identity nodes; export it again")
        followed.add(weight_name)
    if weight_name in initializers:
        tensor = initializers[weight_name]
    elif weight_name in producers and producers[weight_name].op_type == "Constant":
        value = next((a for a in producers[weight_name].attribute if a.name == "value"), None)
        if value is None or value.type != AttributeProto.TENSOR:
            raise StemError(f"{path}: the stem weight {weight_name!r} is a Constant without a tensor value")
        tensor = value.t
    else:
        producer = producers.get(weight_name)
        raise StemError(
            f"{path}: the stem weight {weight_name!r} is computed by a {producer.op_type if producer else 'missing'} "
            "node, not stored; export with constant folding (torch.onnx.export(..., do_constant_folding=True))")
    strides = attributes.get("strides") or [1, 1]
    stem = OnnxStem(
        node=conv.name or weight_name,
        weight_name=weight_name,
        shape=tuple(int(n) for n in tensor.dims),
        group=int(attributes.get("group", 1)),
        stride=int(strides[0]) if len(set(strides)) == 1 else None,
    )
    return stem, tensor


def onnx_stem(path: str | Path) -> OnnxStem:
    """The stem of an ONNX model, from its graph alone (no weights, no external data read)."""
    return _onnx_stem_and_weight(Path(path))[0]


def read_onnx_stem(path: str | Path) -> tuple[OnnxStem, np.ndarray]:
    """The stem of an ONNX model and its weight as float64 (reading an external data file if it lives there)."""
    from onnx import TensorProto, numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    path = Path(path)
    stem, tensor = _onnx_stem_and_weight(path)
    if uses_external_data(tensor):
        from onnx.checker import ValidationError

        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        folder = path.parent.resolve()
        if Path(location).is_absolute() or not (folder / location).resolve().is_relative_to(folder):
            raise CheckpointError(
                f"{path}: the stem weight {stem.weight_name!r} names an external data file outside the model's "
                f"folder ({location!r}), which this workflow does not read; copy it next to the model")
        if not (path.parent / location).is_file():
            raise CheckpointError(
                f"{path}: the stem weight {stem.weight_name!r} lives in the external data file {location!r}, "
                f"which is not next to the model; copy it into {path.parent}")
        try:
            load_external_data_for_tensor(tensor, str(path.parent))
        except (ValueError, OSError, ValidationError) as error:
            raise CheckpointError(f"{path}: cannot read external data {location!r} ({type(error).__name__}); "
                                  "export the model again") from None
        tensor.data_location = TensorProto.DEFAULT
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: the stem weight {stem.weight_name!r} is corrupt ({error})") from None
    if array.dtype.kind != "f":
        raise CheckpointError(f"{path}: the stem {stem.weight_name!r} is stored as {array.dtype}, not as float "
                              "weights (a quantized model?); export the float model")
    return stem, np.asarray(array, dtype=np.float64)
