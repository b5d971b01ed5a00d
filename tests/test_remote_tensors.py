"""Stems read from a remote safetensors file by Range requests: long headers and 16-bit weights."""

import pytest
import torch
from safetensors.torch import save

from firstlayer_zoo.remote_tensors import FIRST_READ, read_remote_safetensors
from loopback import LoopbackServer

KEY = "conv1.weight"


def _serve(server, tensors, metadata=None) -> tuple[str, bytes]:
    data = save(tensors, metadata=metadata)
    return server.add("/model.safetensors", data), data


def test_a_header_longer_than_the_first_read_is_completed_by_a_second_range():
    weight = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    # Metadata pads the JSON header past the first 64 KiB read.
    with LoopbackServer() as server:
        url, data = _serve(server, {KEY: weight, "fc.weight": torch.zeros(10, 4)},
                           metadata={"notes": "x" * (FIRST_READ + 5000)})
        remote = read_remote_safetensors(url, [KEY])
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert header_end > FIRST_READ
    torch.testing.assert_close(torch.from_numpy(remote.tensors[KEY]), weight.double(), rtol=0, atol=0)
    assert remote.metadata["notes"] == "x" * (FIRST_READ + 5000)
    assert [request[2] for request in server.requests] == [
        f"bytes=0-{FIRST_READ - 1}", f"bytes={FIRST_READ}-{header_end - 1}",
        f"bytes={header_end}-{header_end + weight.numel() * 4 - 1}"]
    assert remote.bytes_fetched == header_end + weight.numel() * 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_stems_decode_to_the_values_torch_holds(dtype):
    # Values of every magnitude and sign, subnormals of the 16-bit format included.
    values = torch.randn(16, 3, 3, 3, generator=torch.Generator().manual_seed(1)) * torch.logspace(-6, 3, 27).view(
        1, 3, 3, 3)
    weight = values.to(dtype)
    with LoopbackServer() as server:
        url, _ = _serve(server, {KEY: weight})
        remote = read_remote_safetensors(url, [KEY])
    torch.testing.assert_close(torch.from_numpy(remote.tensors[KEY]), weight.double(), rtol=0, atol=0)
