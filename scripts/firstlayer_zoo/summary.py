"""What a run ends with: per zoo, how many checkpoints were analysed and why the others were skipped."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from .rule_io import ClearError

REASONS_SHOWN = 5  # per zoo; the rest are counted


class NothingAnalysed(ClearError):
    """No checkpoint of the study could be analysed: there is nothing to tabulate or plot."""


def skip_reason(status: str, uri: str | None) -> str:
    """A skipped status without its file name, so that checkpoints skipped for one reason group together."""
    reason = status.removeprefix("skipped: ")
    return reason.replace(f"{uri}: ", "").replace(str(uri), "<file>") if uri else reason


def study_summary(checkpoints: pd.DataFrame, table_path: str, logs: str) -> str:
    """Per zoo: checkpoints, how many are ok, and the skip reasons by count; then where the details are."""
    ok = checkpoints["status"] == "ok"
    lines = [f"Study summary: {len(checkpoints)} checkpoint(s) in {checkpoints['zoo'].nunique()} zoo(s), "
             f"{int(ok.sum())} analysed, {int((~ok).sum())} skipped"]
    for zoo, rows in checkpoints.groupby("zoo", sort=True):
        analysed = int((rows["status"] == "ok").sum())
        skipped = rows[rows["status"] != "ok"]
        lines.append(f"  zoo {zoo} ({rows['source'].iloc[0]}): {len(rows)} checkpoint(s), {analysed} ok, "
                     f"{len(skipped)} skipped")
        reasons = Counter(skip_reason(status, uri) for status, uri in zip(skipped["status"], skipped["uri"]))
        for reason, count in reasons.most_common(REASONS_SHOWN):
            lines.append(f"    {count} skipped: {reason}")
        if len(reasons) > REASONS_SHOWN:
            lines.append(f"    ... and {len(reasons) - REASONS_SHOWN} other reason(s)")
    if (~ok).any():
        lines.append(f"  Each checkpoint's reason is in the status column of {table_path}; job logs are under {logs}")
    return "\n".join(lines)


def require_analysable(checkpoints: pd.DataFrame, summary: str) -> None:
    """Fail a study in which no checkpoint could be analysed, saying why each zoo's were skipped."""
    if not (checkpoints["status"] == "ok").any():
        raise NothingAnalysed(f"no checkpoint of the study could be analysed, so there is nothing to compare "
                              f"or plot; fix the causes below (or the config) and rerun.\n{summary}")
