"""`ostune report NAME`: one self-contained HTML file (plots embedded as base64 PNGs, inline CSS,
no scripts, no external links) that a person can read the morning after a nightly job.

Sections: summary, best-so-far over trials (baseline and shipped profiles as reference lines),
each parameter's effect (value vs objective), parameter importance (random-forest surrogate),
top configurations with their repetitions and noise, verification results with confidence
intervals (when `ostune verify` has run), and the host facts recorded with each run.
"""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from spaces.model import Parameter, Space
from storage.store import ExperimentRecord, ResultStore, TrialRecord
from tuner.errors import BadInputError

TOP_N = 10
MAX_EFFECT_PLOTS = 16
MIN_TRIALS_FOR_IMPORTANCE = 6


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise BadInputError("ostune report needs matplotlib: pip install 'ostune[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:  # type: ignore[no-untyped-def]
    plt = _pyplot()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # a name in a script the default font lacks (CJK) is drawn as boxes, with a warning per
        # glyph naming matplotlib's source files: the report is still right, the terminal noise is not
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def best_so_far(trials: Sequence[TrialRecord], maximize: bool) -> list[tuple[int, float]]:
    """(trial number, best objective up to and including it) for every succeeded trial."""
    out: list[tuple[int, float]] = []
    best: float | None = None
    for t in trials:
        if t.status != "succeeded" or t.objective is None:
            continue
        if best is None or (t.objective > best if maximize else t.objective < best):
            best = t.objective
        out.append((t.number, best))
    return out


@dataclass
class ReportData:
    experiment: ExperimentRecord
    space: Space
    trials: list[TrialRecord]
    runs: list[dict[str, Any]]
    verification: Any
    repetitions: dict[int, list[float]]
    recommended: int | None
    verified: bool
    #: the recommendation's minimal change (tuner/minimal.py) and its verification result, if any
    minimal: Any = None
    minimal_verification: dict[str, Any] | None = None

    @property
    def succeeded(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "succeeded" and t.objective is not None]

    @property
    def baseline(self) -> TrialRecord | None:
        from tuner.experiment import baseline_trial

        return baseline_trial(self.trials)

    @property
    def profiles(self) -> list[TrialRecord]:
        return [t for t in self.succeeded if t.source.startswith("profile:")]

    def top(self, n: int = TOP_N) -> list[TrialRecord]:
        return sorted(self.succeeded, key=lambda t: t.objective, reverse=self.experiment.maximize)[:n]  # type: ignore[arg-type,return-value]


def load(store: ResultStore, experiment: ExperimentRecord) -> ReportData:
    from tuner.experiment import stored_space
    from tuner.outcome import is_verified, latest_verification
    from tuner.recommend import recommend

    space = stored_space(experiment)
    trials = store.trials(experiment.id)
    choice = recommend(store, experiment)
    recommended = choice.trial.number if choice else None
    data = ReportData(experiment, space, trials, store.runs_for(experiment.id),
                      latest_verification(store, experiment.id), {}, recommended,
                      bool(choice and choice.verified) or is_verified(store, experiment, recommended),
                      choice.minimal if choice else None, choice.minimal_verification if choice else None)
    for t in data.top():
        data.repetitions[t.number] = store.repetition_values(t.id, experiment.objective)
    return data


# -- plots ----------------------------------------------------------------------------------------
def plot_progress(data: ReportData) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    objective = data.experiment.objective
    ok = data.succeeded
    ax.scatter([t.number for t in ok], [t.objective for t in ok], s=18, color="#9aa5b1", label="trial", zorder=2)
    failed = [t for t in data.trials if t.status in ("failed", "infeasible")]
    if failed and ok:
        top = max(t.objective for t in ok)  # type: ignore[type-var]
        ax.scatter([t.number for t in failed], [top] * len(failed), marker="x", color="#c0392b",
                   label="failed", zorder=2)
    curve = best_so_far(data.trials, data.experiment.maximize)
    if curve:
        xs, ys = zip(*curve)
        ax.step(xs, ys, where="post", color="#1f6feb", linewidth=2, label="best so far", zorder=3)
    if data.baseline is not None:
        ax.axhline(data.baseline.objective, color="#444", linestyle="--", linewidth=1.2,
                   label=f"baseline (trial {data.baseline.number})")
    palette = ["#2e7d32", "#8e24aa", "#ef6c00", "#00838f", "#6d4c41"]
    for i, t in enumerate(data.profiles):
        ax.axhline(t.objective, color=palette[i % len(palette)], linestyle=":", linewidth=1.5,
                   label=f"{t.source} (trial {t.number})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title(f"{data.experiment.name}: best-so-far {objective}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _numeric(param: Parameter) -> bool:
    return param.type in ("int", "float")


def plot_effects(data: ReportData) -> str | None:
    params = [p for p in data.space.parameters if any(p.name in t.params for t in data.succeeded)][:MAX_EFFECT_PLOTS]
    if not params or not data.succeeded:
        return None
    plt = _pyplot()
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows), squeeze=False)
    best = data.top(1)[0]
    for ax, param in zip(axes.flat, params):
        pts = [(t.params[param.name], t.objective) for t in data.succeeded if param.name in t.params]
        if _numeric(param):
            xs = [float(x) for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], s=16, color="#1f6feb", alpha=0.7)
            if param.log:
                ax.set_xscale("log")
            if param.name in best.params:
                ax.scatter([float(best.params[param.name])], [best.objective], marker="*", s=140,
                           color="#d4a017", zorder=3)
        else:
            labels = [str(c) for c in param.choices] if param.type == "categorical" else ["False", "True"]
            index = {label: i for i, label in enumerate(labels)}
            for x, y in pts:
                key = str(param.coerce(x)) if param.type == "bool" else str(param.coerce(x))
                if key not in index:
                    index[key] = len(labels)
                    labels.append(key)
            for i, label in enumerate(labels):
                ys = [y for x, y in pts if str(param.coerce(x)) == label]
                jitter = [i + 0.12 * math.sin(7.3 * k) for k in range(len(ys))]
                ax.scatter(jitter, ys, s=16, color="#1f6feb", alpha=0.7)
                if ys:
                    ax.hlines(statistics.median(ys), i - 0.3, i + 0.3, color="#c0392b")
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([label[:18] for label in labels], rotation=20, fontsize=7)
        ax.set_title(param.name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    fig.supylabel(data.experiment.objective)
    fig.tight_layout()
    return _png(fig)


def importance(data: ReportData) -> dict[str, float] | None:
    """Impurity-based importance of each parameter in a random-forest fit of the objective on
    the succeeded trials (log objective, as the optimizer sees it). None with too few trials."""
    ok = data.succeeded
    params = [p for p in data.space.parameters if all(p.name in t.params for t in ok)]
    if len(ok) < MIN_TRIALS_FOR_IMPORTANCE or not params:
        return None
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor

    columns: list[list[float]] = []
    owners: list[str] = []
    for param in params:
        values = [param.coerce(t.params[param.name]) for t in ok]
        if _numeric(param):
            col = [math.log(float(v)) if param.log and float(v) > 0 else float(v) for v in values]
            columns.append(col)
            owners.append(param.name)
        elif param.type == "bool":
            columns.append([1.0 if v else 0.0 for v in values])
            owners.append(param.name)
        else:
            for choice in param.choices:
                columns.append([1.0 if v == choice else 0.0 for v in values])
                owners.append(param.name)
    x = np.array(columns).T
    y = np.array([t.objective for t in ok], dtype=float)
    if np.all(y > 0):
        y = np.log(y)
    if np.ptp(y) == 0:
        return {p.name: 0.0 for p in params}
    model = RandomForestRegressor(n_estimators=300, random_state=0, min_samples_leaf=2).fit(x, y)
    scores: dict[str, float] = {p.name: 0.0 for p in params}
    for owner, value in zip(owners, model.feature_importances_):
        scores[owner] += float(value)
    return dict(sorted(scores.items(), key=lambda kv: kv[1], reverse=True))


def plot_importance(scores: dict[str, float]) -> str:
    plt = _pyplot()
    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names, [scores[n] for n in names], color="#1f6feb")
    ax.set_xlabel("importance (share of variance explained by splits)")
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_verification(results: list[dict[str, Any]]) -> str | None:
    rows = [r for r in results if r.get("relative") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ys = list(range(len(rows)))
    rel = [r["relative"] for r in rows]
    low = [r["relative"] - (r["ci_low"] if r["ci_low"] is not None else r["relative"]) for r in rows]
    high = [(r["ci_high"] if r["ci_high"] is not None else r["relative"]) - r["relative"] for r in rows]
    colors = ["#2e7d32" if r["established"] else "#9aa5b1" for r in rows]
    ax.errorbar(rel, ys, xerr=[low, high], fmt="none", ecolor="#444", capsize=4)
    ax.scatter(rel, ys, color=colors, zorder=3, s=40)
    ax.axvline(1.0, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("median relative to baseline, 95% CI (green: established)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


# -- HTML -----------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
.muted{color:#57606a}.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.kpi{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:130px}.kpi b{display:block;font-size:20px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.yes{color:#1a7f37;font-weight:600}.no{color:#9a6700;font-weight:600}code{font-size:12px}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def render(data: ReportData, *, generated: datetime | None = None) -> str:
    exp = data.experiment
    generated = generated or datetime.now().astimezone()
    ok = data.succeeded
    best = data.top(1)[0] if ok else None
    base = data.baseline
    change = ((best.objective - base.objective) / base.objective
              if best and base and base.objective else None)  # type: ignore[operator]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ostune report: {_e(exp.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>ostune report: {_e(exp.name)}</h1>",
        f"<div class='muted'>{_e(exp.direction)} {_e(exp.objective)} · app {_e(exp.target.get('app'))} on "
        f"{_e(exp.target.get('host'))} · seed {exp.seed} · space {_e(exp.space.get('name', ''))} "
        f"({len(data.space)} parameters) · generated {_e(generated.isoformat(timespec='seconds'))}</div>",
        "<div class='kpis'>",
        f"<div class='kpi'>trials<b>{len(data.trials)}</b>{len(ok)} succeeded</div>",
        f"<div class='kpi'>baseline {_e(exp.objective)}<b>{_fmt(base.objective if base else None)}</b>"
        f"{'trial ' + str(base.number) if base else 'not measured'}</div>",
        f"<div class='kpi'>best {_e(exp.objective)}<b>{_fmt(best.objective if best else None)}</b>"
        f"{'trial ' + str(best.number) if best else ''}</div>",
        f"<div class='kpi'>change vs baseline<b>{f'{change:+.1%}' if change is not None else '–'}</b>best vs baseline</div>",
        f"<div class='kpi'>verified<b class='{'yes' if data.verified else 'no'}'>{'yes' if data.verified else 'no'}</b>"
        f"recommended trial {_fmt(data.recommended)}</div>",
        "</div>",
    ]
    parts.append("<h2>Best so far</h2>")
    if ok:
        parts.append(_img(plot_progress(data), "best-so-far objective over trials"))
        refs = ", ".join(f"{_e(t.source)} = {_fmt(t.objective)}" for t in data.profiles)
        parts.append(f"<p class='muted'>Dots are trial medians; the line is the best so far. Reference lines: "
                     f"baseline{' and ' + refs if refs else ' (no shipped profile was measured)'}.</p>")
    else:
        parts.append("<p>No trial has succeeded yet.</p>")

    parts.append("<h2>Parameter effects</h2>")
    effects = plot_effects(data)
    parts.append(_img(effects, "objective against the value of each parameter") if effects else "<p>Nothing to plot.</p>")
    parts.append("<p class='muted'>Each trial's median objective against the parameter's value "
                 "(star: best trial; red bar: median per category). Other parameters vary too: read as "
                 "tendencies, not isolated effects.</p>")

    parts.append("<h2>Parameter importance</h2>")
    scores = importance(data)
    if scores is None:
        parts.append(f"<p>Needs at least {MIN_TRIALS_FOR_IMPORTANCE} succeeded trials ({len(ok)} so far).</p>")
    else:
        parts.append(_img(plot_importance(scores), "parameter importance"))
        parts.append(f"<p class='muted'>Random-forest surrogate of log {_e(exp.objective)} fitted on "
                     f"{len(ok)} succeeded trials; impurity-based importances sum to 1.</p>")

    parts.append(_minimal_html(data))

    parts.append(f"<h2>Top configurations</h2>{_top_table(data)}")
    parts.append(f"<h2>Verification</h2>{_verification_html(data)}")
    parts.append(f"<h2>Host</h2>{_host_html(data)}")
    failed = [t for t in data.trials if t.status != "succeeded"]
    if failed:
        parts.append("<h2>Trials that did not succeed</h2><table><tr><th>#</th><th>status</th><th>error</th></tr>")
        for t in failed[:50]:
            parts.append(f"<tr><td>{t.number}</td><td>{_e(t.status)}</td>"
                         f"<td>{_e((t.error or '').splitlines()[0][:200] if t.error else '')}</td></tr>")
        parts.append("</table>")
    parts.append("<p class='muted'>Written by <code>ostune report</code>. Self-contained: no scripts, "
                 "no external resources.</p></body></html>")
    return "\n".join(parts)


def _top_table(data: ReportData) -> str:
    top = data.top()
    if not top:
        return "<p>No succeeded trials.</p>"
    names = [p.name for p in data.space.parameters]
    obj = data.experiment.objective
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = [f"<table><tr><th>#</th><th>source</th><th>{_e(obj)} (median)</th><th>sd</th><th>reps</th>"
            f"<th>repetition values</th>{head}</tr>"]
    for t in top:
        reps = data.repetitions.get(t.number, [])
        cells = "".join(f"<td>{_e(_fmt(data.space[n].coerce(t.params[n]) if n in t.params else None))}</td>"
                        for n in names)
        mark = " ★" if t.number == data.recommended else ""
        rows.append(
            f"<tr><td>{t.number}{mark}</td><td>{_e(t.source)}</td><td class='num'>{_fmt(t.objective)}</td>"
            f"<td class='num'>{_fmt(t.objective_sd, 3)}</td><td class='num'>{t.repetitions}</td>"
            f"<td>{_e(', '.join(_fmt(v, 3) for v in reps))}</td>{cells}</tr>")
    rows.append("</table><p class='muted'>★ the configuration ostune recommends (`ostune best`). "
                "sd: standard deviation of the objective over the trial's repetitions.</p>")
    return "".join(rows)


def _minimal_html(data: ReportData) -> str:
    change = data.minimal
    if change is None:
        return ""
    values = ", ".join(f"<code>{_e(name)} = {_e(data.space[name].render(value))}</code>"
                       for name, value in change.changes().items())
    from tuner.recommend import verification_status

    status = _e(verification_status(data.minimal_verification,
                                    unmeasured="a model prediction, not measured yet: `ostune verify` measures it"))
    return (f"<h2>Minimal change</h2><p>The model attributes {change.share_kept:.0%} of the recommended "
            f"configuration's predicted improvement to {len(change.kept)} of its "
            f"{change.changed} changed knobs: {values}. The others "
            f"({_e(', '.join(change.reverted))}) can keep the host's values ({status}).</p>")


def _verification_html(data: ReportData) -> str:
    info = data.verification
    if info is None:
        return ("<p>Not verified: run <code>ostune verify NAME</code> to re-measure the best configurations "
                "against the baseline, interleaved, and get confidence intervals.</p>")
    out = [f"<p class='muted'>Verification {info.verification_id} ({_e(info.created_at)}), {info.rounds} rounds, "
           f"status {_e(info.status)}.</p>"]
    plot = plot_verification(info.results)
    if plot:
        out.append(_img(plot, "verification results with confidence intervals"))
    out.append("<table><tr><th>configuration</th><th>trial</th><th>samples</th><th>median</th>"
               "<th>relative to baseline</th><th>95% CI</th><th>established</th></tr>")
    for r in info.results:
        ci = f"{_fmt(r['ci_low'], 3)} – {_fmt(r['ci_high'], 3)}" if r["ci_low"] is not None else "–"
        out.append(f"<tr><td>{_e(r['label'])}</td><td>{_fmt(r['trial'])}</td><td class='num'>{r['samples']}</td>"
                   f"<td class='num'>{_fmt(r['median'])}</td><td class='num'>{_fmt(r['relative'], 3)}</td>"
                   f"<td>{ci}</td><td class='{'yes' if r['established'] else 'no'}'>"
                   f"{'yes' if r['established'] else 'no'}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _host_html(data: ReportData) -> str:
    with_facts = [r for r in data.runs if r.get("host_facts")]
    if not with_facts:
        host = data.experiment.target.get("host")
        return (f"<p>No host facts recorded (host <code>{_e(host)}</code> applies nothing to a kernel, "
                f"so none are collected).</p>")
    latest = with_facts[-1]["host_facts"]
    out = ["<table>"]
    for key in ("hostname", "kernel", "cpu_model", "cpu_count", "memory_mb", "virtualization", "cmdline"):
        if key in latest:
            out.append(f"<tr><th>{_e(key)}</th><td>{_e(latest[key])}</td></tr>")
    for key, value in latest.items():
        if key not in ("hostname", "kernel", "cpu_model", "cpu_count", "memory_mb", "virtualization", "cmdline"):
            out.append(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>")
    out.append("</table>")
    distinct = {(r["host_facts"].get("hostname"), r["host_facts"].get("kernel")) for r in with_facts}
    if len(distinct) > 1:
        out.append(f"<p class='no'>Runs of this experiment saw {len(distinct)} different host/kernel combinations: "
                   f"{_e(', '.join(f'{h} {k}' for h, k in sorted(distinct, key=str)))}.</p>")
    out.append(f"<p class='muted'>From the latest of {len(with_facts)} run(s) with facts.</p>")
    return "".join(out)


def sparkline(values: Sequence[float], maximize: bool = False, width: int = 60) -> str:
    """Unicode block sparkline; for a minimized objective a lower value is a lower bar."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[min(len(values) - 1, int(i * step))] for i in range(width - 1)] + [values[-1]]
    blocks = "▁▂▃▄▅▆▇█"
    low, high = min(values), max(values)
    if high == low:
        return blocks[3] * len(values)
    return "".join(blocks[min(7, int((v - low) / (high - low) * 7.999))] for v in values)
