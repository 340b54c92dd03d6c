"""Terminal output shared by the ``osrm`` commands: progress bars and tables."""

from __future__ import annotations

import sys


def drive(generator, desc: str, quiet: bool = False):
    """Drive a core job generator with a progress bar per stage; return its result."""
    from tqdm import tqdm

    bar = None
    stage = None
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as stop:
                return stop.value
            if quiet:
                continue
            if not hasattr(event, "stage"):  # an executor's worker status: only what happened is worth a line
                worker_message(event)
                continue
            if event.stage != stage:
                if bar is not None:
                    bar.close()
                stage = event.stage
                bar = tqdm(total=event.total, desc=f"{desc} {stage}".strip(), unit="", leave=False, file=sys.stderr, dynamic_ncols=True,
                           disable=None)  # no bars when stderr is not a terminal (logs, CI)
            bar.total = event.total
            bar.n = event.done
            if event.message:
                bar.set_postfix_str(event.message, refresh=False)
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
        generator.close()


def worker_message(event) -> None:
    """A Ray worker's death and re-queue, above the bars (a status without news says nothing)."""
    from tqdm import tqdm

    if getattr(event, "message", ""):
        tqdm.write(f"ray: {event.message}", file=sys.stderr)


def print_events(job, kind: type, line):
    """``job``'s Progress for :func:`drive`'s bars; each ``kind`` event printed as ``line(event)`` as
    soon as it arrives (above the bars); other events are dropped."""
    from tqdm import tqdm

    from osrm_gui.core.progress import Progress

    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if isinstance(event, kind):
                tqdm.write(line(event), file=sys.stdout)
            elif isinstance(event, Progress):
                yield event
    finally:
        job.close()


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4f}"
        return "" if value is None else str(value)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def score_rows(ws, merged_scores, single_scores=None):
    rows = []
    for task in ws.tasks:
        row = {"task": task.name, "metric": task.metric, "n": merged_scores[task.name]["n"]}
        if single_scores:
            row["single"] = single_scores[task.name]["metric"]
        row["merged"] = merged_scores[task.name]["metric"]
        if single_scores and single_scores[task.name]["metric"]:
            row["normalised"] = row["merged"] / single_scores[task.name]["metric"]
        rows.append(row)
    average = {"task": "average", "metric": "", "n": sum(r["n"] for r in rows)}
    for key in ("single", "merged", "normalised"):
        if key in rows[0]:
            average[key] = sum(r[key] for r in rows) / len(rows)
    return rows + [average]
