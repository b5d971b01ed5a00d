"""A search of the Hub's most downloaded image classifiers, resolved and read against the Hub imitation.

    python benchmarks/hub_search.py [--repositories 500] [--workers 8] [--page 100]

Serves N full-size repositories (real tensor names and shapes of 18 transformers families, zeros but the stem;
one base model per family, the rest fine-tunes of them) on 127.0.0.1, resolves the search (listing, config
files, safetensors headers), reads every stem and its base model's (one Range request each), then adds three
repositories and refreshes. Prints the time of each step and the bytes fetched against the files' size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repositories", type=int, default=500)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--page", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["HF_HOME"] = home
        from hf_families import populate
        from loopback import HubImitation

        from firstlayer_zoo.downloads import RetryPolicy
        from firstlayer_zoo.hf_resolve import HubRequest, read_stem, resolve

        with HubImitation() as hub:
            os.environ["HF_ENDPOINT"] = hub.url
            hub.page_size = args.page
            started = time.monotonic()
            made = populate(hub, args.repositories)
            print(f"imitation: {len(made)} repositories, {sum(m['size'] for m in made.values()) / 1e9:.1f} GB of "
                  f"weights, built in {time.monotonic() - started:.1f} s")
            search = {"search": {"library": "transformers", "pipeline_tag": "image-classification",
                                 "sort": "downloads", "limit": args.repositories}, "init": "base_model"}
            request = HubRequest.from_options(search)
            policy = RetryPolicy()
            started = time.monotonic()
            index = resolve(request, policy=policy, workers=args.workers, log=lambda line: None)
            resolve_s = time.monotonic() - started
            entries = index["entries"]
            ok = [entry for entry in entries.values() if entry["status"] == "ok"]
            print(f"resolution: {len(entries)} repositories ({len(ok)} ok) in {resolve_s:.1f} s, "
                  f"{index['bytes_fetched']:,} bytes")
            started = time.monotonic()
            known = {**index["entries"], **index["bases"]}
            served = sum(hub.sent.values())
            for entry in ok:
                base = known.get(entry["init"]["repo"]) if entry["init"]["status"] == "ok" else None
                read_stem(entry, base, policy=policy)
            stem_bytes = sum(hub.sent.values()) - served  # the stems and their bases', as the server sent them
            read_s = time.monotonic() - started
            total = sum(entry["stem"]["file_size"] for entry in ok)
            fetched = index["bytes_fetched"] + stem_bytes
            print(f"stems: {len(ok)} read (with their base model's) in {read_s:.1f} s, {stem_bytes:,} bytes")
            print(f"fetched {fetched:,} bytes of {total:,} ({100 * fetched / total:.3f} %)")

            populate(hub, 3, first=args.repositories)
            request = HubRequest.from_options({**search, "search": {**search["search"],
                                                                    "limit": args.repositories + 3}})
            started = time.monotonic()
            again = resolve(request, index, policy=policy, workers=args.workers, log=lambda line: None)
            print(f"refresh with 3 more: {again['resolved']} resolved, {len(again['entries'])} listed, in "
                  f"{time.monotonic() - started:.1f} s, {again['bytes_fetched']:,} bytes")


if __name__ == "__main__":
    main()
