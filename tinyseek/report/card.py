"""The report card of a run, put together and written: `build_report`, `write_report` and `tinyseek report`.

    tinyseek report RUN            # writes RUN/report/{report.json, report.md, *.png}, prints the tables
    tinyseek report RUN --pool RUN2 RUN3    # outcome vs process: the arms' paired differences also pooled over
                                            # the runs (other seeds of the recipe)

The card is the general sections (sections.py) plus an experiment's own where the run holds one
(outcome_vs_process.py, r1_zero.py), written as JSON, Markdown (render.py) and PNG plots (plots.py) into RUN/report/
atomically, so a failed report never leaves half a card.
"""

from __future__ import annotations

import json
from pathlib import Path

from tinyseek.config import CommandParser
from tinyseek.errors import TinyseekError
from tinyseek.report.outcome_vs_process import outcome_vs_process, plot_outcome_vs_process
from tinyseek.report.plots import plot_accuracy, plot_expert_load, plot_losses, plot_rl
from tinyseek.report.r1_zero import plot_r1_zero, r1_zero
from tinyseek.report.render import render_console, render_markdown
from tinyseek.report.run import REPORT_DIR, load_run
from tinyseek.report.sections import build_sections


def build_report(
    run: str | Path, cpu_hour_price: float | None = None, gpu_hour_price: float | None = None, pool: tuple = ()
) -> dict:
    """The report as a JSON-able dict (also the source of the Markdown and the console tables); `pool`: other runs
    of the outcome-vs-process recipe whose paired comparisons are pooled with this run's."""
    from tinyseek.train.loop import TrainConfig

    data = load_run(run)
    defaults = TrainConfig()
    cpu_price = defaults.cpu_hour_price if cpu_hour_price is None else cpu_hour_price
    gpu_price = defaults.gpu_hour_price if gpu_hour_price is None else gpu_hour_price
    rep = build_sections(data, cpu_price, gpu_price)
    seen = [Path(r).resolve() for r in (run, *pool)]
    if len(set(seen)) < len(seen):
        raise TinyseekError(f"--pool: a run is given twice ({', '.join(map(str, pool))}): its pairs would count twice")
    ovp = outcome_vs_process(data, [load_run(r) for r in pool])
    if pool and ovp is None:
        raise TinyseekError(f"{run}: --pool pools the outcome-vs-process arms' comparisons; this run has no such arms")
    if ovp is not None:
        rep["outcome_vs_process"] = ovp
    zero = r1_zero(data)
    if zero is not None:
        rep["r1_zero"] = zero
    return rep


def write_report(
    run: str | Path,
    cpu_hour_price: float | None = None,
    gpu_hour_price: float | None = None,
    plots: bool = True,
    pool: tuple = (),
) -> dict:
    """Build the report and write RUN/report/ (atomically); returns the report with a "console" string added."""
    from tinyseek.io import atomic_dir

    run = Path(run)
    rep = build_report(run, cpu_hour_price, gpu_hour_price, pool)
    data = load_run(run) if plots else None
    with atomic_dir(run / REPORT_DIR) as tmp:
        if plots:
            for name, fn, arg in (
                ("accuracy.png", plot_accuracy, rep),
                ("losses.png", plot_losses, data),
                ("rl.png", plot_rl, data),
                ("expert_load.png", plot_expert_load, data),
                ("outcome_vs_process.png", plot_outcome_vs_process, rep.get("outcome_vs_process")),
                ("r1_zero.png", plot_r1_zero, rep.get("r1_zero")),
            ):
                if fn(arg, tmp / name):
                    rep["plots"].append(str(run / REPORT_DIR / name))
        (tmp / "report.json").write_text(json.dumps(rep, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(rep), encoding="utf-8")
    rep["console"] = render_console(rep)
    return rep


def cli_report(argv: list[str]) -> int:
    p = CommandParser(
        prog="tinyseek report",
        description="Write the report card of a recipe run: "
        "RUN/report/report.json, report.md and PNG plots; prints the tables.",
    )
    p.add_argument("run", help="a run directory written by `tinyseek run` / `tinyseek demo`")
    p.add_argument(
        "--cpu-hour-price", type=float, default=None, help="$ per CPU-machine-hour (default: the training loop's)"
    )
    p.add_argument(
        "--gpu-hour-price",
        type=float,
        default=None,
        help="$ per GPU-hour (default: the training loop's, $2 as DeepSeek-V3's report)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--pool",
        nargs="+",
        default=[],
        metavar="RUN",
        help="other runs of the outcome-vs-process recipe (its other seeds): the arms' paired differences pooled",
    )
    a = p.parse_args(argv)
    rep = write_report(a.run, a.cpu_hour_price, a.gpu_hour_price, plots=not a.no_plots, pool=tuple(a.pool))
    print(rep["console"])
    return 0
