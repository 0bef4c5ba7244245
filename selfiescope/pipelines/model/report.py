"""The training report: PNG charts and one self-contained HTML file (images inlined as data URIs).

All figures come from out-of-fold predictions, so they describe photos the model did
not see while fitting. Example pictures are read through the storage backend (the
caller's ``read_image``), never opened as paths.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import FeatureTable
    from .train import CVResult, Fitted

THUMB = 160
N_EXAMPLES = 6
N_IMPORTANCE = 25


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)


def roc_png(path: Path, y: np.ndarray, curves: dict[str, np.ndarray]) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, prob in curves.items():
        fpr, tpr, _ = roc_curve(y, prob)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, prob):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (out-of-fold)")
    ax.legend(loc="lower right")
    _save(fig, path)


def confusion_png(path: Path, cm: list[list[int]], labels: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    arr = np.array(cm)
    ax.imshow(arr, cmap="Blues")
    names = [labels[1], labels[0]]  # index 0 = negative, 1 = positive
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (threshold 0.5)")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(arr[i, j]), ha="center", va="center",
                    color="white" if arr[i, j] > arr.max() / 2 else "black", fontsize=14)
    _save(fig, path)


def calibration_png(path: Path, y: np.ndarray, curves: dict[str, np.ndarray]) -> None:
    """Reliability curves (quantile bins), one per named set of probabilities."""
    from sklearn.calibration import calibration_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    bins = max(2, min(10, len(y) // 10))
    for name, prob in curves.items():
        frac, mean = calibration_curve(y, prob, n_bins=bins, strategy="quantile")
        ax.plot(mean, frac, "o-", label=f"{name} (Brier {np.mean((prob - y) ** 2):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="reliability (out-of-fold)")
    ax.legend(loc="upper left")
    _save(fig, path)


def importance_png(path: Path, names: list[str], gains: np.ndarray) -> list[tuple[str, float]]:
    order = np.argsort(gains)[::-1][:N_IMPORTANCE]
    top = [(names[i], float(gains[i])) for i in order if gains[i] > 0]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(top) + 1)))
    ax.barh([n for n, _ in reversed(top)], [g for _, g in reversed(top)], color="#4a7ab5")
    ax.set(xlabel="total gain", title="feature importance (final model)")
    _save(fig, path)
    return top


def balance_png(path: Path, rows: list[Any], labels: list[str]) -> dict[str, dict[str, int]]:
    per_job: dict[str, Counter[str]] = {}
    for r in rows:
        per_job.setdefault(r.job or "(none)", Counter())[r.label] += 1
    jobs = sorted(per_job, key=lambda j: -sum(per_job[j].values()))[:30]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(jobs) + 1)))
    left = np.zeros(len(jobs))
    for label in labels:
        counts = np.array([per_job[j][label] for j in jobs], dtype=float)
        ax.barh(jobs, counts, left=left, label=label)
        left += counts
    ax.invert_yaxis()
    ax.set(xlabel="images", title="class balance per hashtag / source job")
    ax.legend(loc="lower right")
    _save(fig, path)
    return {j: dict(per_job[j]) for j in jobs}


def _thumb_uri(data: bytes | None) -> str | None:
    from PIL import Image, ImageOps

    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
    except Exception:  # a missing or unreadable file only loses its thumbnail
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def examples(table: "FeatureTable", prob: np.ndarray, labels: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Most confident correct predictions per label, and the most wrong ones overall."""
    y = table.y
    correct = (prob >= 0.5) == (y == 1)
    confidence = np.abs(prob - 0.5)
    out: dict[str, list[dict[str, Any]]] = {}
    for cls, label in ((1, labels[0]), (0, labels[1])):
        idx = np.where(correct & (y == cls))[0]
        out[f"most confident {label}"] = [_example(table, prob, i) for i in idx[np.argsort(-confidence[idx])][:N_EXAMPLES]]
    wrong = np.where(~correct)[0]
    out["most wrong"] = [_example(table, prob, i) for i in wrong[np.argsort(-confidence[wrong])][:N_EXAMPLES * 2]]
    return out


def _example(table: "FeatureTable", prob: np.ndarray, i: int) -> dict[str, Any]:
    r = table.rows[i]
    return {"location": r.location, "label": r.label, "job": r.job, "probability": float(prob[i]), "row": r}


def montage_png(path: Path, groups: dict[str, list[dict[str, Any]]]) -> None:
    from PIL import Image

    plt = _plt()
    rows = [(title, items) for title, items in groups.items() if items]
    if not rows:
        return
    cols = max(len(items) for _, items in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.8 * cols, 2.1 * len(rows)), squeeze=False)
    for r, (title, items) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(items):
                continue
            try:
                with Image.open(io.BytesIO(items[c]["data"])) as im:
                    im = im.convert("RGB")
                    im.thumbnail((THUMB, THUMB))
                    ax.imshow(np.asarray(im))
            except Exception:
                ax.text(0.5, 0.5, "missing", ha="center")
            ax.set_title(f"{items[c]['label']} p={items[c]['probability']:.2f}", fontsize=8)
        axes[r][0].text(-0.1, 0.5, title, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    _save(fig, path)


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _metrics_table(metrics: dict[str, Any]) -> str:
    from .assessment import BASELINE_TITLES

    from .model_card import ROWS_NOTE, model_rows

    cv = metrics["cv"]
    rows = model_rows(cv)
    if "without_normalize" in cv:
        rows.append(("LightGBM, files as stored (no normalize)", cv["without_normalize"], None))
    baselines = cv.get("baselines") or {"face_area": cv["baseline_face_area"]}
    rows += [(f"baseline: {BASELINE_TITLES.get(k, k)}", v, k) for k, v in baselines.items()]
    columns = {title: m for title, m, _ in rows}
    keys = ["roc_auc", "average_precision", "accuracy", "balanced_accuracy", "f1", "precision", "recall", "brier", "log_loss"]
    cis = cv.get("roc_auc_ci95", {})
    ci_keys = [key or "(none)" for _, _, key in rows]
    body = "".join(f"<tr><td>{k}</td>{''.join(f'<td>{_fmt(m[k])}</td>' for m in columns.values())}</tr>" for k in keys)
    ci_row = "".join(f"<td>{'%.3f-%.3f' % tuple(cis[k]) if cis.get(k) else 'n/a'}</td>" for k in ci_keys)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return (f"<table><tr><th>metric</th>{head}</tr>{body}<tr><td>ROC AUC 95% CI</td>{ci_row}</tr></table>"
            f"<p><small>{html.escape(ROWS_NOTE)} {html.escape(cv.get('ci_method', ''))}</small></p>")


def _calibration_html(metrics: dict[str, Any]) -> str:
    """The calibration choice: every candidate's held-out Brier score, "none" among them."""
    cal = metrics["cv"].get("calibration")
    if not cal:
        return ""
    cells = "".join(f"<tr><td>{html.escape(m)}</td><td>{_fmt(b)}</td></tr>" for m, b in cal.get("brier_by_method", {}).items())
    return (f"<h2>Calibration of the final model: {html.escape(cal['method'])}</h2>"
            f"<table><tr><th>candidate</th><th>held-out Brier</th></tr>{cells}</table>"
            f"<p><small>{html.escape(cal.get('chosen_by', ''))} (margin {_fmt(cal.get('selection_penalty'))})."
            " The reliability curve below is the final model's.</small></p>")


def _warnings_html(metrics: dict[str, Any]) -> str:
    items = "".join(f"<li>{html.escape(w)}</li>" for w in metrics.get("warnings", []))
    return f'<div class="warn"><h2>These figures cannot be trusted as they are</h2><ul>{items}</ul></div>' if items else ""


def _honesty_html(metrics: dict[str, Any]) -> str:
    """The frame counterfactual's flips and the rejection rates that depended on the label."""
    from .counterfactual import flip_lines

    flips = "".join(f"<li>{html.escape(line)}</li>" for line in flip_lines(metrics.get("counterfactual")))
    losses = "".join(
        f"<li>{html.escape(loss['reason'])}: " + html.escape(", ".join(f"{k} {v:.0%}" for k, v in loss["rates"].items()))
        + "</li>" for loss in metrics.get("dataset", {}).get("class_dependent_losses") or [])
    return (f"<h2>Frame counterfactual (photos moved to the other label's typical aspect ratio, and, separately, pixel size and face position)</h2><ul>{flips or '<li>not run</li>'}</ul>"
            f"<h2>Rejections whose rate depended on the label</h2><ul>{losses or '<li>none</li>'}</ul>")


def _per_source_html(metrics: dict[str, Any], labels: list[str]) -> str:
    rows = []
    for job, m in metrics["cv"].get("per_source", {}).items():
        counts = "".join(f"<td>{m['per_label'].get(label, 0)}</td>" for label in labels)
        rows.append(f"<tr><td>{html.escape(job)}</td><td>{m['images']}</td>{counts}<td>{_fmt(m['accuracy'])}</td>"
                    f"<td>{_fmt(m['mean_probability'])}</td><td>{_fmt(m['roc_auc'])}</td></tr>")
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    return (f"<table><tr><th>source job</th><th>images</th>{head}<th>accuracy</th><th>mean p({html.escape(labels[0])})</th>"
            f"<th>AUC</th></tr>{''.join(rows)}</table>")


def write_report(
    out_dir: Path, *, table: "FeatureTable", cv: "CVResult", final: "Fitted", schema: dict[str, Any],
    metrics: dict[str, Any], read_image: Callable[[Any], bytes | None] | None = None,
) -> Path:
    """``read_image(row)``: a dataset row's stored bytes (through the storage backend), None if unreadable."""
    labels = schema["labels"]
    y = table.y
    pngs: dict[str, Path] = {}
    assessment = cv.assessment
    if len(np.unique(y)) == 2:
        from .assessment import BASELINE_TITLES

        pngs["roc"] = out_dir / "roc.png"
        baselines = assessment.baselines if assessment else {"face_area": cv.baseline_oof}
        roc_png(pngs["roc"], y, {"LightGBM": cv.oof, **{BASELINE_TITLES.get(k, k): p for k, p in baselines.items()}})
        pngs["calibration"] = out_dir / "calibration.png"
        calibration = assessment.calibration if assessment else None
        scores = calibration.scores if calibration is not None and calibration.scores is not None else cv.oof
        calibrated = calibration is not None and calibration.method != "none"
        curves = {"final model, raw" + ("" if calibrated else " = predict"): scores}  # cross-fitted, as trained
        if calibrated:
            curves[f"{calibration.method} = predict"] = calibration.calibrated_oof
        calibration_png(pngs["calibration"], y, curves)
    pngs["confusion"] = out_dir / "confusion.png"
    confusion_png(pngs["confusion"], metrics["cv"]["lightgbm"]["confusion_matrix"], labels)
    pngs["importance"] = out_dir / "importance.png"
    gains = final.booster.feature_importance(importance_type="gain")
    top = importance_png(pngs["importance"], table.columns, gains)
    pngs["balance"] = out_dir / "balance.png"
    balance = balance_png(pngs["balance"], table.rows, labels)
    picked = examples(table, cv.oof, labels)
    for items in picked.values():
        for e in items:
            e["data"] = read_image(e.pop("row")) if read_image else None
            e.pop("row", None)
    pngs["examples"] = out_dir / "examples.png"
    montage_png(pngs["examples"], picked)

    def img(key: str, alt: str) -> str:
        p = pngs.get(key)
        return f'<img src="{_png_uri(p)}" alt="{alt}">' if p and p.exists() else ""

    sections = []
    for title, items in picked.items():
        cells = []
        for e in items:
            uri = _thumb_uri(e["data"])
            pic = f'<img src="{uri}" alt="">' if uri else "<em>image missing</em>"
            cells.append(
                f'<figure>{pic}<figcaption>{html.escape(e["label"])} · {html.escape(e["job"])}<br>'
                f'p({html.escape(labels[0])}) = {e["probability"]:.2f}<br><small>{html.escape(e["location"].rsplit("/", 1)[-1])}</small>'
                "</figcaption></figure>"
            )
        sections.append(f"<h3>{html.escape(title)}</h3><div class='row'>{''.join(cells) or '<p>none</p>'}</div>")
    ds = metrics["dataset"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>selfiescope model report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .3em .7em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.row {{ display: flex; flex-wrap: wrap; gap: .6em; }} figure {{ margin: 0; width: {THUMB}px; font-size: .8em; }}
.charts img {{ max-width: 48%; vertical-align: top; }}
.warn {{ border: 2px solid #b00; background: #fff0f0; padding: .5em 1em; margin: 1em 0; }}
</style></head><body>
<h1>selfiescope model report: {html.escape(metrics["pipeline"])}</h1>
<p>{ds["images"]} images ({", ".join(f"{html.escape(k)}: {v}" for k, v in ds["per_label"].items())}),
{ds["groups"]} cross-validation groups (largest: {ds.get("largest_group", "?")} images), {ds["failed"]} unusable; {metrics["cv"]["folds"]}-fold cross-validation
grouped by {html.escape(metrics["cv"]["grouped_by"])}; {len(table.columns)} features from groups
{", ".join(html.escape(g["name"]) for g in schema["groups"])}. Positive label: <b>{html.escape(labels[0])}</b>.</p>
{_warnings_html(metrics)}
<h2>Out-of-fold metrics</h2>{_metrics_table(metrics)}
{_calibration_html(metrics)}
{_honesty_html(metrics)}
<h2>Per source (hashtag / folder job), calibrated out-of-fold</h2>{_per_source_html(metrics, labels)}
<div class="charts">{img("roc", "ROC curve")}{img("calibration", "calibration curve")}
{img("confusion", "confusion matrix")}{img("balance", "class balance per hashtag")}</div>
<h2>Feature importance</h2>{img("importance", "feature importance")}
<h2>Examples (out-of-fold probabilities)</h2>{"".join(sections)}
<h2>Class balance per hashtag</h2><table><tr><th>job</th>{"".join(f"<th>{html.escape(l)}</th>" for l in labels)}</tr>
{"".join(f"<tr><td>{html.escape(j)}</td>{''.join(f'<td>{c.get(l, 0)}</td>' for l in labels)}</tr>" for j, c in balance.items())}</table>
<h2>Top features</h2><table><tr><th>feature</th><th>gain</th></tr>
{"".join(f"<tr><td>{html.escape(n)}</td><td>{g:.1f}</td></tr>" for n, g in top)}</table>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
