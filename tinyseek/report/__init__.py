"""The report card of a run: what every stage achieved and what it cost, as JSON, Markdown and PNG plots.

run.py                  reading a run directory: recipe.json, and each stage's stage.json, summary.json,
                        metrics.jsonl, eval.json
given.py                what each stage was given to learn from, in words
sections.py             the report's sections: stages and costs, evaluations, comparisons, RL curves
cells.py                how a number is written in a table cell; a Markdown table
plots.py                the PNG plots
outcome_vs_process.py   the outcome-vs-process experiment's section, text and plot
r1_zero.py              R1-Zero's section: R1's Figures 2-3 measured, the behaviours, the "aha" table
render.py               report.md and the console tables
card.py                 build_report, write_report and `tinyseek report`
"""
