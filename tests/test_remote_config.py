"""The schema branches of the remote zoo sources: defaults filled in, mistakes named by key."""

import pytest
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from workflow_helpers import ROOT

SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def _config(zoo):
    return {"datasets": {"photos": {"source": "skimage"}}, "zoos": {"z": {"dataset": "photos", **zoo}}}


def test_remote_sources_get_their_defaults():
    config = _config({"source": "timm", "models": ["resnet50.a1_in1k"]})
    validate(config, SCHEMA)
    assert config["zoos"]["z"]["revision"] == "main" and config["zoos"]["z"]["exclude"] == []
    config = _config({"source": "archive", "url": "http://127.0.0.1/z.zip", "checkpoints": "*/checkpoints",
                      "first_conv": "module_list.0", "kernel_size": 3, "in_chans": 3, "preprocessing": {}})
    validate(config, SCHEMA)
    assert config["zoos"]["z"]["step_pattern"] == r"checkpoint_(\d+)"
    assert config["zoos"]["z"]["params_file"] == "params.json"


@pytest.mark.parametrize("zoo, key", [
    ({"source": "timm", "models": []}, "models"),
    ({"source": "timm", "models": ["resnet50"], "revison": "main"}, "revison"),
    ({"source": "torchvision", "weights": ["resnet50"]}, "resnet50"),
    ({"source": "torchhub", "entries": ["a/b:c"], "preprocessing": {}}, "trust_repo"),
    ({"source": "archive", "url": "http://127.0.0.1/z.zip", "checkpoints": "*", "first_conv": "c",
      "kernel_size": 3, "in_chans": 3, "preprocessing": {}, "sha256": "abc"}, "sha256"),
])
def test_mistakes_are_named(zoo, key):
    with pytest.raises(WorkflowError, match=key):
        validate(_config(zoo), SCHEMA)
