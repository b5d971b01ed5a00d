"""benchmarks/gpu_check.py, the one command that proves every GPU path, in its CPU mode (issue 26).

The device run needs a GPU; here the script's own CPU mode runs end to end, as the device machine would run it
(without the packages that machine lacks), and a one-level mismatch or a warning is shown to fail it.
"""

import importlib.util
import re
import subprocess
import sys
import warnings

import pytest

from workflow_helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# In this venv but not on the GPU machine (Python 3.12, its own torch, timm, pandas, pyarrow, scikit-image).
ABSENT_ON_THE_DEVICE = ("snakemake", "onnx", "h5py", "matplotlib", "seaborn", "jsonschema", "pooch")
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<device>[^|]*?) \| (?P<reference>[^|]*?) \| (?P<status>pass|FAIL|n/a) "
                 r"\| (?P<seconds>[0-9.]+) s \|$", re.MULTILINE)


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # spawned workers find it by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def table(output: str) -> dict[str, dict]:
    return {match["name"]: match.groupdict() for match in ROW.finditer(output)}


def engine_suffixes() -> list[str]:
    from firstlayer_zoo import patchstats

    return ["" if engine is None else f" [{engine}]" for engine in getattr(patchstats, "ENGINES", (None,))]


def test_cpu_mode_runs_every_row_and_each_passes_without_the_packages_the_device_lacks():
    # None in sys.modules is how Python says a module is absent: importing it raises ModuleNotFoundError and
    # importlib.util.find_spec answers None, as on the device machine.
    absent = (f"import runpy, sys\nsys.modules.update(dict.fromkeys({ABSENT_ON_THE_DEVICE!r}))\n"
              f"sys.argv = [{str(SCRIPT)!r}, '--device', 'cpu']\n"
              f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", absent], cwd=ROOT, capture_output=True, text=True, timeout=600)
    rows = table(done.stdout)
    expected = ["environment"]
    for suffix in engine_suffixes():
        expected += [f"patch sums k=3 grey+colour{suffix}", f"C(d) k=3 grey+colour{suffix}",
                     f"patch sums k=7 grey+colour{suffix}", f"C(d) k=7 grey+colour{suffix}",
                     f"patch sums k=16 grey+colour{suffix}", f"C(d) k=16 grey+colour{suffix}",
                     f"patch sums k=32 grey{suffix}", f"C(d) k=32 grey{suffix}"]
    expected += ["notebook API analyse()", "bf16 training step resnet18_cifar", "stem float32 resnet18_cifar",
                 "bf16 training step vgg11_bn_cifar", "stem float32 vgg11_bn_cifar",
                 *[f"ImageNet-sized k=16 patch sums{suffix}" for suffix in engine_suffixes()],
                 "2-run zoo --parallel 1", "2-run zoo --parallel 2", "zoo target (12 runs, 30 epochs, < 3 min)"]
    assert list(rows) == expected, done.stdout + done.stderr
    assert {name: row["status"] for name, row in rows.items() if row["status"] != "pass"} == \
        {"zoo target (12 runs, 30 epochs, < 3 min)": "n/a"}, done.stdout
    first = engine_suffixes()[0]
    assert "cpu: identical" in rows[f"patch sums k=32 grey{first}"]["reference"]
    assert "float32" in rows["bf16 training step resnet18_cifar"]["device"]
    assert "img/s a run" in rows["2-run zoo --parallel 2"]["device"]
    assert "d=2:" in rows[f"ImageNet-sized k=16 patch sums{first}"]["device"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(expected)} rows, 0 failed" in done.stdout


@pytest.mark.parametrize("inject", ["pixel", "ulp"])
def test_one_pixel_one_level_off_or_one_float64_step_off_on_the_device_side_fails_the_patch_rows(
        gpu_check, capsys, inject):
    """pixel: the device's side sees one pixel one grey level off (one patch of thousands changes);
    ulp: its covariance and C(d) come back with one entry the smallest step a float64 can take: only a bit-for-bit
    comparison catches that."""
    code = gpu_check.main(["--device", "cpu", "--only", "patch", "cross", "--kernels", "3", "--inject", inject])
    output = capsys.readouterr().out
    rows = table(output)
    assert code == 1
    assert rows["environment"]["status"] == "pass"
    for suffix in engine_suffixes():
        for name in ("patch sums", "C(d)"):
            row = rows[f"{name} k=3 grey+colour{suffix}"]
            assert row["status"] == "FAIL" and row["reference"] == "cpu: DIFFERENT", output
    assert "entries differ" in output  # which entries, and by how much, are printed under the table


def test_a_warning_inside_a_check_fails_its_row_and_is_printed(gpu_check, capsys, monkeypatch):
    from firstlayer_zoo import patchstats

    exact_centred = patchstats.exact_centred

    def warning_exact_centred(*args):
        warnings.warn("invalid value encountered in cast", RuntimeWarning)
        return exact_centred(*args)

    monkeypatch.setattr(patchstats, "exact_centred", warning_exact_centred)
    code = gpu_check.main(["--device", "cpu", "--only", "patch", "--kernels", "3"])
    output = capsys.readouterr().out
    rows = table(output)
    assert code == 1
    assert rows["environment"]["status"] == "pass"
    first = f"patch sums k=3 grey+colour{engine_suffixes()[0]}"
    assert rows[first]["status"] == "FAIL"
    assert rows[first]["reference"].startswith("cpu: identical")  # the values agree; the warning fails it
    assert "warning: RuntimeWarning: invalid value encountered in cast" in output


def test_a_warning_in_a_training_worker_comes_back_with_its_run(gpu_check, monkeypatch):
    import train_speed

    def warning_train_one(settings):
        warnings.warn("TypedStorage is deprecated", UserWarning)
        return {"run": "a-run", "images_per_s": 1.0}

    monkeypatch.setattr(train_speed, "train_one", warning_train_one)
    result = gpu_check.train_worker({"arch": "resnet18_cifar"})
    assert result["run"] == "a-run" and len(result["warnings"]) == 1
    assert result["warnings"][0].startswith("UserWarning: TypedStorage is deprecated")


def test_every_engine_patchstats_offers_gets_its_rows_and_is_called_by_name(gpu_check, capsys, monkeypatch):
    from firstlayer_zoo import patchstats

    called = []

    class Spy(patchstats.PatchMoments):
        def __init__(self, *args, engine="auto", **kwargs):
            called.append(engine)
            super().__init__(*args, engine=engine, **kwargs)

    monkeypatch.setattr(patchstats, "PatchMoments", Spy)
    code = gpu_check.main(["--device", "cpu", "--only", "patch", "cross", "--kernels", "3"])
    rows = table(capsys.readouterr().out)
    assert code == 0
    names = list(patchstats.ENGINES)
    assert len(names) > 1
    assert [name for name in rows if name != "environment"] == [
        row for name in names for row in (f"patch sums k=3 grey+colour [{name}]", f"C(d) k=3 grey+colour [{name}]")]
    for name in names:
        assert rows[f"patch sums k=3 grey+colour [{name}]"]["reference"] == "cpu: identical, = default engine on cpu"
    # Per engine and channel count: the device's side, the CPU's, and the CPU's default engine.
    assert called == [call for name in names for call in [name, name, "auto"] * 2]


def test_the_full_size_imagenet_row_uses_the_studys_offsets(gpu_check):
    from firstlayer_zoo.notebook import DEFAULT_OFFSETS

    assert gpu_check.SIZES["full"].imagenet_offsets == DEFAULT_OFFSETS
