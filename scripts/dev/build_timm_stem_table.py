"""Build workflow/resources/timm_stems.csv: the stem and eval preprocessing of every timm pretrained tag.

Planning a study over timm's whole zoo must not build 1,151 models; this script
does it once (on the meta device: no memory, no weights, about 2.5 minutes on
2 cores) and the table it writes is committed. Rerun it after upgrading timm:

    python scripts/dev/build_timm_stem_table.py [--out workflow/resources/timm_stems.csv]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from firstlayer_zoo.meta_models import on_meta_device  # noqa: E402
from firstlayer_zoo.paths import TIMM_STEM_TABLE  # noqa: E402
from firstlayer_zoo.timm_table import TIMM_TABLE_COLUMNS  # noqa: E402
from firstlayer_zoo.timm_table_build import dataset_tag, stem_row  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(TIMM_STEM_TABLE))
    parser.add_argument("--limit", type=int, default=None, help="first N architectures only (for a quick look)")
    args = parser.parse_args()

    import pandas as pd
    import timm

    from firstlayer_zoo.atomic import atomic_path

    tags = timm.list_models(pretrained=True)
    by_arch: dict[str, list[str]] = {}
    for tag in tags:
        by_arch.setdefault(tag.split(".")[0], []).append(tag)
    archs = sorted(by_arch)[: args.limit]
    started = time.perf_counter()
    rows = []
    for index, arch in enumerate(archs):
        try:
            model = on_meta_device(lambda: timm.create_model(arch, pretrained=False))
            build_error = None
        except Exception as error:  # noqa: BLE001 - one odd architecture must not stop the table
            model, build_error = None, f"{type(error).__name__}: {error}".splitlines()[0][:200]
        # timm registers an architecture's default tag first: a bare name means that one.
        default = next(iter(timm.models.get_arch_pretrained_cfgs(arch)))
        for tag in by_arch[arch]:
            cfg = timm.models.get_pretrained_cfg(tag).to_dict()
            row = stem_row(tag, cfg, model, build_error)
            row["dataset_tag"] = dataset_tag(tag)
            row["default_tag"] = tag == default
            rows.append(row)
        if index % 100 == 0:
            print(f"{index}/{len(archs)} architectures, {time.perf_counter() - started:.0f} s", flush=True)
    frame = pd.DataFrame(rows, columns=TIMM_TABLE_COLUMNS).sort_values("tag")
    for column in ("kernel_size", "in_chans", "out_channels", "stride"):
        frame[column] = frame[column].astype("Int64")  # integers, with blanks where the stem is unknown
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, index=False)
        tmp.chmod(0o644)
    print(f"{len(frame)} tags over {len(archs)} architectures in {time.perf_counter() - started:.0f} s "
          f"(timm {timm.__version__}) -> {args.out}")


if __name__ == "__main__":
    main()
