"""A `hf` zoo of N Hub repositories run end to end through the workflow, against the Hub imitation.

    python benchmarks/hub_workflow.py [--repositories 500] [--more 3] [--shard-size 32] [--cores 2]

Serves N full-size image classifiers on 127.0.0.1 (tests/hf_families.py populate: real tensor names and shapes of
18 transformers families, zeros but the stem; one base model per family, the rest fine-tunes of them), writes a
study of one zoo that searches them (most downloaded first, `init: base_model`, `refresh: true`) on scikit-image's
photos, and runs `snakemake --cores 2` on it: listing, patch bases, every stem and its base's, tables and figures.
Prints the wall time, the bytes the imitation sent against the size of the repositories' weights files, and the
jobs by rule. Then serves `--more` repositories more and runs again: prints which shards and rules ran.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from firstlayer_zoo.paths import StudyPaths  # noqa: E402
from firstlayer_zoo.shards import shard_count, shard_name  # noqa: E402
from firstlayer_zoo.zoo_sources.huggingface import checkpoint_name  # noqa: E402


def stamps(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def jobs_run(before: dict[str, int], after: dict[str, int]) -> dict[str, list[str]]:
    """The jobs a run ran, by rule, from the logs it wrote (one log a job: logs/<rule>[/<wildcards>].log)."""
    jobs: dict[str, list[str]] = {}
    for path in sorted(after):
        if path.startswith("logs/") and before.get(path) != after[path]:
            parts = Path(path).parts[1:]
            jobs.setdefault(parts[0].removesuffix(".log"), []).append("/".join(parts[1:]).removesuffix(".log"))
    return jobs


def run(workdir: Path, config: Path, cores: int, env: dict) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                             "--directory", str(workdir), "--configfile", str(config), "--cores", str(cores)],
                            capture_output=True, text=True, env={**os.environ, **env})
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repositories", type=int, default=500)
    parser.add_argument("--more", type=int, default=3)
    # 16 shards of 32 for 500 repositories (the default 128 makes 4): the rerun then shows how few shards 3 touch.
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="kept afterwards; a temporary folder by default")
    args = parser.parse_args()

    import pandas as pd

    from hf_families import populate
    from loopback import HubImitation

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory() as scratch, HubImitation() as hub:
        workdir = (args.workdir or Path(scratch) / "study").resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        made = populate(hub, args.repositories)
        size = sum(item["size"] for item in made.values())
        print(f"imitation: {len(made)} repositories, {size / 1e9:.1f} GB of weights files "
              f"(built in {time.monotonic() - started:.1f} s)")
        config = {"outdir": "results", "datasets": {"photos": {"source": "skimage"}},
                  "analysis": {"shard_size": args.shard_size},
                  "zoos": {"hub": {"source": "hf", "dataset": "photos", "refresh": True, "init": "base_model",
                                   "search": {"library": "transformers", "pipeline_tag": "image-classification",
                                              "sort": "downloads"}}}}
        (workdir / "hub.yaml").write_text(yaml.safe_dump(config))
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(Path(scratch) / "hf_home")}

        sent = sum(hub.sent.values())
        wall = run(workdir, workdir / "hub.yaml", args.cores, env)
        fetched = sum(hub.sent.values()) - sent
        results = workdir / "results"
        checkpoints = pd.read_parquet(StudyPaths(str(results)).table("checkpoints"))
        ok = checkpoints[checkpoints["status"] == "ok"]
        first = stamps(results)
        jobs = jobs_run({}, first)
        print(f"first run: {wall:.1f} s wall (snakemake --cores {args.cores}), load average "
              f"{os.getloadavg()[0]:.2f} at its end; {len(checkpoints)} checkpoints, {len(ok)} ok, "
              f"{int(ok['init_known'].sum())} against their base model, {checkpoints['basis'].nunique()} bases")
        print("  jobs: " + ", ".join(f"{rule} {len(found)}" for rule, found in sorted(jobs.items())))
        print(f"  fetched {fetched:,} bytes (listing, config files, headers, stems and base stems) of {size:,} "
              f"({100 * fetched / size:.3f} %)")

        added = populate(hub, args.more, first=args.repositories)
        sent = sum(hub.sent.values())
        wall = run(workdir, workdir / "hub.yaml", args.cores, env)
        again = stamps(results)
        jobs = jobs_run(first, again)
        count = shard_count(args.repositories + args.more, args.shard_size)
        theirs = sorted({shard_name(checkpoint_name(repo), count) for repo in added})
        print(f"rerun with {len(added)} more ({', '.join(added)}): {wall:.1f} s wall, "
              f"{sum(hub.sent.values()) - sent:,} bytes fetched, load average {os.getloadavg()[0]:.2f}")
        print("  jobs: " + ", ".join(f"{rule} {len(found)}" for rule, found in sorted(jobs.items())))
        print(f"  shards run: {sorted(jobs.get('analyse_checkpoints', []))} of {count}; the new repositories' "
              f"shards: {['hub/' + shard for shard in theirs]}")


if __name__ == "__main__":
    main()
