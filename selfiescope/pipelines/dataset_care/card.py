"""The dataset card: ``DATASET.md`` and ``datacard.json`` in the storage root.

Written by ``selfiescope card`` and refreshed at the end of every run and every
``forget``, from the manifest and the settings alone: what was collected, from where
and when, how it was filtered, what was rejected and why, the known biases of the
filters, how people are protected, and the terms the data comes with. It never holds
an owner, a caption, a post id or the dataset key.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ... import __version__
from ...core.lock import root_in_use
from ...core.manifest import Manifest
from ...core.app import App
from ...core.plugin_state import card_facts
from ...core.plugins import Registry
from ...core.settings import ScrapePipeline, Settings
from ...core.text import redact_text, redact_values
from .reviewed import label_sql, review_progress, trainable_sql
from ...core.lock import pid_alive as _alive

log = logging.getLogger("selfiescope.card")
CARD_JSON = "datacard.json"
CARD_MD = "DATASET.md"
FORMAT = "selfiescope-datacard/1"

LICENCE = (
    "The images belong to the people who posted them and show their faces: they are personal data. "
    "This dataset is for research by the person who collected it. Do not publish or redistribute the "
    "images; share models and aggregate figures only. Honour every removal request with "
    "`selfiescope forget` and retrain the models it lists. Collecting from a site may be restricted by "
    "its terms of use and by data-protection law (e.g. the GDPR) where you and the people pictured live: "
    "checking both is the collector's responsibility."
)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def _components(settings: Settings, registry: Registry, manifest: Manifest) -> list[tuple[type, str, dict[str, Any]]]:
    """(class, name, options) of every source and step that made, or may have made, this dataset,
    once each: those of the settings' collect pipelines and of the default chain (what ad-hoc
    ``import``/``scrape`` runs use), the sources its images came from and the steps that rejected some."""
    wanted: list[tuple[dict[str, type], str, ScrapePipeline | None]] = []
    for pipeline in settings.pipelines.values():
        if isinstance(pipeline, ScrapePipeline):
            wanted += [(registry.sources, pipeline.source, pipeline), *((registry.steps, s, pipeline) for s in pipeline.chain)]
    wanted += [(registry.steps, s, None) for s in ScrapePipeline.model_fields["chain"].default]
    wanted += [(registry.sources, r[0], None) for r in manifest.query("SELECT DISTINCT source FROM images")]
    wanted += [(registry.steps, r[0], None) for r in manifest.query("SELECT DISTINCT rejected_by FROM rejections")]
    seen: dict[str, tuple[type, str, dict[str, Any]]] = {}
    for table, name, pipeline in wanted:
        if name in seen or name not in table:
            continue
        values = settings.component_options(name, pipeline)
        try:
            values = table[name].Options.model_validate(values).model_dump(mode="json")
        except Exception:  # invalid options are reported by the run; the card shows what is set
            pass
        seen[name] = (table[name], name, values)
    return list(seen.values())


def _unpackaged(cls: type) -> str:
    if cls.__module__.startswith("selfiescope."):
        return f"selfiescope {__version__} (built-in)"
    return f"{cls.__module__} (not an installed package)"


# What every dataset collected from a site's hashtags shares, whichever components made it.
GENERAL_BIASES = [
    "Labels are given per job (a hashtag, a folder), not per photo: they are noisy (a #selfie is not always a selfie).",
]


def known_biases(components: list[tuple[type, str, dict[str, Any]]]) -> list[str]:
    """The card's known biases: each component's own (``Component.known_biases``), in pipeline order."""
    out = list(GENERAL_BIASES)
    for cls, _name, options in components:
        try:
            opts = cls.Options.model_validate(options)
        except Exception:  # noqa: BLE001 - the card still says what it can
            continue
        out += [b for b in cls.known_biases(opts) if b not in out]
    return out


def run_statuses(manifest: Manifest) -> dict[str, int]:
    """Runs per status, told truthfully without writing: a row still ``running`` while nobody
    holds the root's lock was killed, and counts as ``interrupted`` (the next run or forget,
    holding the lock, marks it so)."""
    by_status = {r[0] or "?": r[1] for r in manifest.query("SELECT status, COUNT(*) FROM runs GROUP BY status")}
    if by_status.get("running") and not root_in_use(manifest.root):
        by_status["interrupted"] = by_status.get("interrupted", 0) + by_status.pop("running")
    return dict(sorted(by_status.items()))


def build_card(app: App, manifest: Manifest) -> dict[str, Any]:
    settings, registry = app.settings, app.registry
    q = manifest.query
    # One pass over the accepted images: counts and dates per (source, job, label).
    groups = q("SELECT source, job, label, COUNT(*) n, MIN(first_seen) a, MAX(first_seen) b FROM images"
               " WHERE decision='accepted' GROUP BY source, job, label ORDER BY source, job, label")
    labels: dict[str, int] = {}
    by_source: dict[str, dict[str, Any]] = {}
    for g in groups:
        labels[g["label"]] = labels.get(g["label"], 0) + g["n"]
        src = by_source.setdefault(g["source"], {"source": g["source"], "images": 0, "a": g["a"], "b": g["b"], "jobs": []})
        src["images"] += g["n"]
        src["a"], src["b"] = min(src["a"], g["a"]), max(src["b"], g["b"])
        src["jobs"].append({"job": redact_text(g["job"]) if g["job"] else g["job"], "label": g["label"], "images": g["n"]})  # a job may be a URL
    sources = [
        {"source": s["source"], "images": s["images"], "first": _iso(s["a"]), "last": _iso(s["b"]), "jobs": s["jobs"]}
        for s in by_source.values()
    ]
    from .class_losses import class_dependent_losses, loss_warnings, rejections_by_label

    by_label = rejections_by_label(manifest)
    losses = class_dependent_losses(by_label)
    rejections = {
        f"{r[0] or '?'}/{r[1] or '?'}": r[2]
        for r in q("SELECT rejected_by, reject_code, COUNT(*) FROM rejections GROUP BY 1, 2 ORDER BY 3 DESC")
    }
    runs = q("SELECT COUNT(*) n, MIN(started) a, MAX(finished) b FROM runs")[0]
    by_status = run_statuses(manifest)
    last = q("SELECT pipeline, status, finished FROM runs WHERE finished IS NOT NULL ORDER BY id DESC LIMIT 1")
    components = _components(settings, registry, manifest)
    facts = card_facts(manifest, list(registry.states.values()))
    options = {name: values for _cls, name, values in components}
    chains = {name: p.chain for name, p in settings.pipelines.items() if isinstance(p, ScrapePipeline)}
    plugins = [
        {"component": i.name, "kind": i.kind, "plugin": i.plugin, "from": i.dist or _unpackaged(i.cls)}
        for i in sorted(registry.info, key=lambda i: (i.kind, i.name))
    ]
    privacy = settings.privacy
    progress = review_progress(manifest)
    reviewed_labels = {r[0]: r[1] for r in q(
        f"SELECT {label_sql(manifest)}, COUNT(*) FROM images WHERE decision='accepted' AND location IS NOT NULL"
        f" AND {trainable_sql(manifest)} GROUP BY 1 ORDER BY 1")}
    return {
        "format": FORMAT,
        "generated": _iso(time.time()),
        "tool": f"selfiescope {__version__}",
        "images": sum(labels.values()),
        "per_label": labels,
        "per_source": {s["source"]: s["images"] for s in sources},
        "sources": sources,
        "collection": {
            "runs": runs["n"], "first_run": _iso(runs["a"]), "last_run_finished": _iso(runs["b"]),
            "runs_by_status": by_status,
            "last_run": dict(last[0]) | {"finished": _iso(last[0]["finished"])} if last else None,
        },
        "filters": {"chains": chains, "options": redact_values(options)},  # options may hold URLs
        "plugins": plugins,
        "rejections": {"total": sum(rejections.values()), "by_reason": rejections,
                       "by_label": by_label, "class_dependent": losses},
        # Photos met under two labels, as the plugins that keep them count them (dedup).
        "conflicts": sum(int(f.get("conflicts", 0)) for f in facts.values()),
        "plugin_facts": facts,
        # `selfiescope review`: how far people looked at the labels, and the labels training uses after it
        "review": progress.as_dict() | {"per_label_for_training": reviewed_labels},
        "privacy": {
            "owners": "pseudonymised: HMAC-SHA256 with a per-dataset key kept in the storage root (mode 0600)",
            "captions_stored": privacy.store_captions,
            "metadata_removed": privacy.strip_metadata,
            "forgotten_tombstones": q("SELECT COUNT(*) FROM tombstones")[0][0],
        },
        "known_biases": loss_warnings(losses, settings) + known_biases(components),
        "licence": LICENCE,
    }


def render_markdown(card: dict[str, Any]) -> str:
    lines = [
        "# Dataset card", "",
        f"Generated {card['generated']} by {card['tool']}. Machine-readable: `{CARD_JSON}`.", "",
        f"**{card['images']} images**: " + (", ".join(f"{k} {v}" for k, v in sorted(card["per_label"].items())) or "none"),
        "", "## Sources", "",
        "| source | job | label | images |", "|---|---|---|---|",
    ]
    for s in card["sources"]:
        for j in s["jobs"]:
            lines.append(f"| {s['source']} | {j['job']} | {j['label']} | {j['images']} |")
    col = card["collection"]
    lines += ["", "## Collection", "",
              f"- runs: {col['runs']} (first {col['first_run']}, last finished {col['last_run_finished']})"]
    if stopped := col.get("runs_by_status", {}).get("interrupted"):
        lines.append(f"- runs that were interrupted or killed before they finished: {stopped}")
    for s in card["sources"]:
        lines.append(f"- {s['source']}: images stored from {s['first']} to {s['last']}")
    f = card["filters"]
    lines += ["", "## Filters", ""]
    lines += [f"- pipeline `{name}`: {' -> '.join(chain)}" for name, chain in f["chains"].items()]
    lines += [f"- {name}: `{json.dumps(values, sort_keys=True)}`" for name, values in f["options"].items()]
    rej = card["rejections"]
    lines += ["", f"## Rejections ({rej['total']})", ""]
    lines += [f"- {reason}: {n}" for reason, n in rej["by_reason"].items()] or ["- none"]
    for loss in rej.get("class_dependent", []):
        rates = ", ".join(f"{label} {rate:.0%}" for label, rate in loss["rates"].items())
        lines.append(f"- **class-dependent loss**: {loss['reason']} rejected {rates} of the photos seen per label")
    lines += [f"- photos met under two labels (conflicts): {card['conflicts']}"]
    lines += [f"- {namespace} {key}: {json.dumps(value)}" for namespace, facts in card["plugin_facts"].items()
              for key, value in facts.items() if key != "conflicts"]
    if review := card.get("review"):
        lines += ["", "## Review", "",
                  f"- {review['reviewed']} of {review['stored']} stored images reviewed (`selfiescope review`);"
                  f" {review['relabeled']} relabeled, {review['excluded']} excluded from training",
                  "- labels training uses: " + (", ".join(f"{k} {v}" for k, v in review["per_label_for_training"].items())
                                                or "none")]
    lines += ["", "## Known biases", ""] + [f"- {b}" for b in card["known_biases"]]
    p = card["privacy"]
    lines += ["", "## Privacy", "",
              f"- owners: {p['owners']}",
              f"- captions stored: {'yes' if p['captions_stored'] else 'no'}",
              f"- metadata removed from stored copies: {p['metadata_removed']}",
              f"- removal requests honoured (tombstones): {p['forgotten_tombstones']}"]
    if card["plugins"]:
        lines += ["", "## Plugins", "", "| component | kind | from |", "|---|---|---|"]
        lines += [f"| {c['component']} | {c['kind']} | {c['from']} |" for c in card["plugins"]]
    lines += ["", "## Licence and terms of use", "", card["licence"], ""]
    return "\n".join(lines)



def _remove_dead_temps(path: Path) -> None:
    """Temp copies of the card that a killed process left (its pid, in the name, is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    _remove_dead_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a card behind
        raise


def write_card(app: App, manifest: Manifest) -> tuple[Path, Path]:
    card = build_card(app, manifest)
    root = manifest.root
    _write_atomic(root / CARD_JSON, json.dumps(card, indent=2, default=str) + "\n")
    _write_atomic(root / CARD_MD, render_markdown(card))
    return root / CARD_MD, root / CARD_JSON


def refresh_card(app: App, manifest: Manifest) -> None:
    """Rewrite the card after a run; a failure is logged, never the run's failure."""
    try:
        write_card(app, manifest)
    except Exception as exc:
        log.warning("could not refresh the dataset card in %s: %s", manifest.root, exc)
