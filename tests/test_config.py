"""A bad config is refused at start-up with a message that names the key."""

import pytest

from workflow_helpers import ROOT, snakemake, write_config


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"zoos": {"z": {"source": "train", "dataset": "photos", "archs": [{"arch": "test_resnet"}],
                         "seeds": [0], "labels": ["true"], "steps": [0], "preprocessing": {}}}},
         "steps"),
        ({"zoos": {"z": {"source": "train", "dataset": "photos", "archs": [{"arch": "test_resnet"}],
                         "seeds": [0], "labels": [True], "steps": [5], "preprocessing": {}}}},
         "labels"),
        ({"datasets": {"photos": {"source": "skimage", "imagez": ["astronaut"]}}}, "imagez"),
        ({"analysis": {"statistics_device": "tpu"}}, "statistics_device"),
        ({"datasets": {"photos": {"source": "cifar10", "splitt": "test"}}}, "splitt"),
        ({"datasets": {"photos": {"source": "skimage", "subsample": {"count": 0}}}}, "count"),
        ({"zoos": {"z": {"source": "nowhere", "dataset": "photos"}}}, "nowhere"),
    ],
)
def test_schema_error_names_the_key(tmp_path, changes, expected):
    config = write_config(tmp_path / "bad.yaml", changes)
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ValidationError" in output or "Error validating config" in output
    assert expected in output


def test_unknown_dataset_is_named(tmp_path):
    config = write_config(tmp_path / "bad.yaml", {"zoos": {"z": {
        "source": "train", "dataset": "imagenet", "archs": [{"arch": "test_resnet"}],
        "seeds": [0], "labels": ["true"], "steps": [5], "preprocessing": {}}}})
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert "zoos.z.dataset" in result.stdout + result.stderr
    assert "'imagenet' is not a dataset" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "zoo,expected",
    [
        ({"source": "folder", "dataset": "photos", "root": "."},
         "zoos.z: give arch (a timm model name) or stem_key"),
        ({"source": "folder", "dataset": "photos", "root": "no/such/folder", "stem_key": "conv1.weight"},
         "zoos.z.root: no/such/folder is not a folder"),
        ({"source": "folder", "dataset": "photos", "root": ".", "stem_key": "w", "patch_layout": "whc"},
         "whc"),
        ({"source": "onnx", "dataset": "photos", "root": ".", "stem_key": "w"}, "stem_key"),
    ],
)
def test_local_zoo_config_errors_name_the_key(tmp_path, zoo, expected):
    config = write_config(tmp_path / "bad.yaml", {"zoos": {"z": zoo}})
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr


@pytest.mark.parametrize("value", ["gpu", "cpu"])
def test_removed_decode_option_is_refused_in_one_line_saying_why(tmp_path, value):
    config = write_config(tmp_path / "bad.yaml", {"analysis": {"decode": value}})
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    line = next(line for line in output.splitlines() if "analysis.decode was removed" in line)
    assert "corrupted" in line and "docs/benchmarks.md" in line and "delete the key" in line


def test_renamed_device_option_is_refused_in_one_line_giving_the_new_name(tmp_path):
    config = write_config(tmp_path / "old.yaml", {"analysis": {"device": "cuda"}})
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    line = next(line for line in (result.stdout + result.stderr).splitlines() if "analysis.device" in line)
    assert "analysis.device was renamed analysis.statistics_device" in line and "patch statistics" in line


def test_the_settings_defaults_are_the_schemas():
    """plan.Study reads `analysis`, `consistency`, `plots` and `limits` into records whose defaults the schema sets."""
    import dataclasses

    import yaml

    from firstlayer_zoo.limits import Limits
    from firstlayer_zoo.settings import AnalysisSettings, ConsistencySettings, PlotSettings

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
    for section, record in [("analysis", AnalysisSettings), ("consistency", ConsistencySettings),
                            ("plots", PlotSettings), ("limits", Limits)]:
        defaults = {name: entry["default"] for name, entry in schema[section]["properties"].items()}
        assert dataclasses.asdict(record()) == defaults, section


def test_no_rule_reads_the_config_but_to_build_the_study():
    """Rules get what they need from the Study (plan.py), never from the raw config."""
    import re

    allowed = {"refuse_oversized_config(config)", "refuse_removed_options(config)", "validate(config,",
               "Study(config)"}
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"\"[^\"]*\"", "\"\"", line.split("#")[0])  # strings and comments aside
            for match in re.finditer(r"\bconfig\b", code):
                assert any(code.find(call) <= match.start() < code.find(call) + len(call)
                           for call in allowed if call in code), f"{path.name}:{number}: {line.strip()}"
    from firstlayer_zoo.plan import Study

    assert "config" not in Study.__init__.__code__.co_names  # it keeps no copy for the rules to reach into
