"""The demo: the whole product on the local Instagram-like site, no credentials, no internet.

Starts the site, scrapes two selfie tags and two portrait tags concurrently (one run, one
browser, four contexts) through decode -> face_area -> dedup -> store, trains the classifier
on what was stored, and says where everything went. The photos are synthetic renderings.

Like a settings file, the demo names the built-in components it composes; it lives beside
the CLI, not among the pipelines, which never name a component.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.text import Text

from .core.app import App
from .core.settings import ScrapePipeline, Settings, SettingsError, TrainPipeline

DEMO_MARK = ".selfiescope-demo"
DEMO_ENTRIES = {"data", "model", "session.json", DEMO_MARK}  # all a demo ever writes in its folder

SELFIE_TAGS = ["selfie", "selfies"]
PORTRAIT_TAGS = ["portrait", "portraitphotography"]


@contextmanager
def _demo_credentials(username: str, password: str) -> Iterator[None]:
    """The local site's demo account, for this process only (never written anywhere)."""
    keys = {"SELFIESCOPE_INSTAGRAM_USERNAME": username, "SELFIESCOPE_INSTAGRAM_PASSWORD": password}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def demo_settings(settings: Settings, base_url: str, out_dir: Path, per_tag: int) -> tuple[Settings, list[ScrapePipeline], TrainPipeline]:
    plugins = dict(settings.plugins)
    # Our own local site: a generous request budget (the real site's default is 60/min).
    plugins["instagram"] = {**plugins.get("instagram", {}), "base_url": base_url,
                            "requests_per_minute": 3000, "jitter_s": 0.05, "scroll_pause_s": 1.0}
    s = settings.model_copy(update={
        "storage": settings.storage.model_copy(update={"root": out_dir / "data"}),
        "browser": settings.browser.model_copy(update={"session_file": out_dir / "session.json"}),
        "plugins": plugins,
    })
    chain = ["decode", "face_area", "dedup", "store"]
    # Every synthetic rendering is the same photo of the same person, re-framed: at the
    # default distance many would rightly count as near-duplicates, so the demo only
    # drops (near-)identical copies, such as the photo the site reposts under two tags.
    options = {"dedup": {"max_distance": 3}}
    scrape = [
        ScrapePipeline(kind="scrape", source="instagram", hashtags=tags, label=label, limit=per_tag, chain=chain,
                       options=options)
        for label, tags in (("selfie", SELFIE_TAGS), ("portrait", PORTRAIT_TAGS))
    ]
    train = TrainPipeline(kind="train", labels=["selfie", "portrait"], folds=3, model_dir=out_dir / "model",
                          features=["geometry", "landmarks", "image"])
    s.pipelines = {**s.pipelines, "demo_train": train}
    return s, scrape, train


def _written_by_demo(folder: Path) -> bool:
    """The marker, or (a demo from before the marker) only demo entries and a manifest whose
    every run is the demo's."""
    if not folder.is_dir():
        return False
    if (folder / DEMO_MARK).is_file():
        return True
    if not {p.name for p in folder.iterdir()} <= DEMO_ENTRIES or not (folder / "data" / "manifest.sqlite").is_file():
        return False
    import sqlite3

    try:
        with sqlite3.connect(f"file:{folder / 'data' / 'manifest.sqlite'}?mode=ro", uri=True) as db:
            pipelines = {row[0] for row in db.execute("SELECT pipeline FROM runs")}
    except sqlite3.Error:
        return False
    return pipelines == {"demo"}


def review_command(root: Path) -> str:
    """The command that reviews the demo's dataset, as this shell can run it: the storage root
    through the environment (the demo's settings live in memory only), and the program as it was
    started when that was a path (``make demo`` runs ``.venv/bin/selfiescope``)."""
    program = sys.argv[0] if Path(sys.argv[0]).name == "selfiescope" else "selfiescope"
    return f"SELFIESCOPE_STORAGE__ROOT={shlex.quote(str(Path(root).resolve()))} {shlex.quote(program)} review"


def demo(app: App, *, as_json: bool = False, out_dir: Path = Path("demo-output"),
         per_tag: int = 40, fresh: bool = True, train: bool = True) -> int:
    from .testing.site import MockInstagram
    from .pipelines.collecting.collect import collect

    settings = app.settings
    console = Console(stderr=True, quiet=as_json, markup=False)  # messages hold paths: never markup
    out_dir = Path(out_dir).expanduser()
    if fresh and out_dir.exists():
        if not _written_by_demo(out_dir):
            raise SettingsError([f"--output {out_dir}: exists and was not written by `selfiescope demo`; "
                                 "refusing to replace it. Choose a new folder."])
        shutil.rmtree(out_dir)  # our own earlier demo output (marked)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DEMO_MARK).write_text("written by `selfiescope demo`; the next demo run replaces this folder\n")
    result: dict[str, Any] = {"output": str(out_dir.resolve()), "synthetic": True}
    t0 = time.monotonic()
    with MockInstagram(latency_ms=20, rate_limit_every=25, retry_after_s=1) as site:
        console.print(Text.assemble(("local Instagram-like site", "bold"), f" at {site.base_url} (synthetic photos)"))
        s, scrape, train_p = demo_settings(settings, site.base_url, out_dir, per_tag)
        demo_app = app.with_settings(s)
        console.print(f"scraping #{' #'.join(SELFIE_TAGS + PORTRAIT_TAGS)} concurrently (limit {per_tag} per tag)...")
        with _demo_credentials(site.username, site.password):
            stats = asyncio.run(collect(demo_app, "demo", pipeline=scrape[0], together=scrape[1:]))
    result["scrape"] = stats.as_dict()
    from .pipelines.dataset_care.class_losses import rejection_lines

    reasons = "; ".join(rejection_lines(dict(stats.rejected_by_reason), s))
    console.print(
        f"scraped {stats.seen} images: {stats.accepted} stored, {stats.rejected} rejected"
        + (f" ({reasons})" if reasons else "") + f" in {stats.elapsed:.1f}s"
    )
    status = 1 if stats.error_lines() else 0
    for line in stats.error_lines():
        console.print(Text.assemble(("error:", "red"), f" {line}"), highlight=False)
    if train:
        try:
            from .pipelines.model.train import train as run_train
        except ImportError:
            console.print("training pipeline not installed; skipping")
        else:
            console.print("training the selfie/portrait classifier...")
            summary = run_train(demo_app, "demo_train").summary()
            result["train"] = summary
            console.print(
                f"{summary['images']} images {summary['per_label']}, {summary['folds']}-fold grouped CV: "
                f"ROC-AUC {summary['roc_auc']:.3f} (face area alone: {summary['baseline_roc_auc']:.3f}), "
                f"accuracy {summary['accuracy']:.3f}"
            )
            console.print(f"model in {train_p.model_dir}, report {train_p.model_dir / 'report.html'}", markup=False)
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["review_command"] = review_command(s.storage.root)
    if as_json:
        import json

        print(json.dumps(result, default=str, indent=2))
    else:
        console.print(Text.assemble(("done", "bold green"), f" in {result['elapsed_s']}s: dataset in {s.storage.root}, "
                                    f"manifest {s.storage.root / 'manifest.sqlite'}"))
        console.print("look at it and fix its labels in a browser:", highlight=False)
        console.print(f"  {result['review_command']}", highlight=False, markup=False, soft_wrap=True)
    return status
