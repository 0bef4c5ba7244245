"""Scraping throughput with 1 vs. N browser contexts, and peak memory over 2,000 images.

Both parts run the ``instagram`` source end to end (real Chromium, the engine, the
chain, the manifest, files on disk) against the local Instagram-like site.

Part 1: ``--tags`` hashtags of ``--per-tag`` posts each, every response delayed by
``--latency-ms``, scraped once with 1 context and once with ``--contexts`` contexts,
side by side in this run. A context downloads one image at a time, so with latency L
the bound is ``contexts / L`` images/s (a little lower: feed pages cost requests too).
Printed: images/s over the whole run (with the browser start) and in steady state
(first to last image), beside that bound.

Part 2: ``--memory-images`` images (4 hashtags, one context each) at a low latency;
the peak memory of this Python process (RSS), of Chromium (PSS summed over all its
processes: RSS would count shared pages once per process) and of Playwright's driver,
sampled every 0.5 s, and the memory after each quarter of the images, to show whether
it keeps growing.

Part 3: the same scrape of a clean site and of a hostile one (seeded chaos:
hung beacons and feed answers, cut-off and mislabelled images, expiring signed URLs,
a per-account 429 block, late and unknown pop-ups, slow first bytes). Printed: the
share of the posts gathered, images/s (first to last image) against the bound the
latency and the rate budget allow (goal: >= 0.8 of it on the clean run), and, for a
tag whose feed hangs, the seconds from its last new post to the stall's report and to
the job's failure (``stall_s`` is the configured wait).

Budget: 2 hashtags with a realistic latency (120 ms) under a budget of 10 requests/s; images/s
against the bound the budget and the latency allow (goal: >= 0.8), with the default ``jitter_s``
and with none, side by side.

Lean browser: 4 hashtags of real 1080 px photos at once; bytes the site sent per stored image
against the stored size (goal <= 1.3x) and the peak PSS of Python + Playwright's driver + Chromium
(goal <= 1 GB).

The site serves small images in parts 1 to 3 (a unique 96 px JPEG per post, instead of rendering
1080 px faces) so that the site itself, in this same process and on the same cores, is
not what is measured. The chain is ``decode,store`` unless ``--chain`` says otherwise.

    .venv/bin/python benchmarks/bench_scrape.py [--latency-ms 50] [--tags 4] [--per-tag 60]
        [--contexts 4] [--memory-images 2000] [--skip-memory] [--skip-throughput] [--skip-chaos]
        [--skip-budget] [--skip-lean]

The machine's CPU is shared with other work while this runs (2 cores): figures vary by run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.app import App
from selfiescope import hookimpl  # noqa: E402
from selfiescope.core.browser import save_session  # noqa: E402
from selfiescope.core.settings import ScrapePipeline, settings_from_dict  # noqa: E402
from selfiescope.pipelines.collecting.collect import collect  # noqa: E402
from selfiescope.testing.chaos import Chaos  # noqa: E402
from selfiescope.testing.site import MockInstagram, Post, TagSpec  # noqa: E402

MB = 1024 * 1024


def small_jpeg(post: Post, width: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(int(post.id) % 2**32)
    pixels = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=80)
    return buf.getvalue()


class Timeline:
    """Timestamps of every image leaving the chain."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @hookimpl
    def selfiescope_image_accepted(self, event: Any, run: Any) -> None:
        self.times.append(time.monotonic())

    @hookimpl
    def selfiescope_image_rejected(self, event: Any, run: Any) -> None:
        self.times.append(time.monotonic())


def proportional_memory(p: psutil.Process) -> int:
    """PSS where the OS gives it (shared pages split between the processes sharing them), else RSS."""
    try:
        return getattr(p.memory_full_info(), "pss", None) or p.memory_info().rss
    except psutil.AccessDenied:
        return p.memory_info().rss


class MemorySampler(threading.Thread):
    """Samples (t, Python RSS, Chromium PSS summed over its processes, Playwright driver RSS,
    and the PSS of all three together)."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, int, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop_event.is_set():
            chromium = driver = driver_pss = 0
            for p in me.children(recursive=True):
                try:
                    if "chrom" in p.name().lower():
                        chromium += proportional_memory(p)
                    else:
                        driver += p.memory_info().rss
                        driver_pss += proportional_memory(p)
                except psutil.Error:
                    continue
            total = proportional_memory(me) + chromium + driver_pss
            self.samples.append((time.monotonic(), me.memory_info().rss, chromium, driver, total))
            self.stop_event.wait(self.interval)

    def at(self, t: float) -> tuple[float, int, int, int, int]:
        return min(self.samples, key=lambda s: abs(s[0] - t))


def make_site(tags: int, per_tag: int, latency_ms: float, chaos: Chaos | None = None,
              real_images: bool = False) -> MockInstagram:
    spec = {f"tag{i}": TagSpec(per_tag, "mixed", noface=0, small_face=0) for i in range(tags)}
    site = MockInstagram(tags=spec, latency_ms=latency_ms, page_size=24, chaos=chaos)
    if not real_images:
        site.media_bytes = small_jpeg  # type: ignore[method-assign]
    site.start()
    return site


class States:
    """Timestamps of every job state the run reports."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []
        self.images: list[tuple[float, str]] = []

    @hookimpl
    def selfiescope_run_started(self, run: Any) -> None:
        run.stats.state_listeners.append(lambda job, state: self.seen.append((time.monotonic(), job, state)))

    @hookimpl
    def selfiescope_image_accepted(self, event: Any, run: Any) -> None:
        self.images.append((time.monotonic(), event.origin.job))


async def scrape_once(site: MockInstagram, root: Path, contexts: int, chain: list[str], workers: int,
                      options: dict[str, Any] | None = None, timeout_s: float = 30.0,
                      states: States | None = None) -> dict[str, Any]:
    cookie = {"name": "sessionid", "value": site.login_session(), "domain": "127.0.0.1", "path": "/",
              "expires": -1, "httpOnly": True, "secure": False, "sameSite": "Lax"}
    save_session(root / "session.json", {"cookies": [cookie], "origins": []})
    settings = settings_from_dict({
        "storage": {"root": str(root)},
        "browser": {"session_file": str(root / "session.json"), "max_contexts": contexts, "timeout_s": timeout_s},
        "engine": {"workers": workers},
        "plugins": {"instagram": {"base_url": site.base_url, "requests_per_minute": 1e6, "jitter_s": 0,
                                  "scroll_pause_s": 2.0, "max_idle_scrolls": 2, **(options or {})}},
    })
    pipeline = ScrapePipeline(kind="scrape", source="instagram", hashtags=list(site.tags), label="bench", chain=chain)
    timeline = Timeline()
    t0 = time.monotonic()
    stats = await collect(App.create(settings, plugins=[timeline, *([states] if states else [])]), "bench", pipeline=pipeline)
    total = time.monotonic() - t0
    n = len(timeline.times)
    steady = (n - 1) / (timeline.times[-1] - timeline.times[0]) if n > 1 else 0.0
    first = timeline.times[0] - t0 if n else total
    tail = t0 + total - timeline.times[-1] if n else 0.0
    return {"images": stats.seen, "errors": stats.errors, "total_s": total, "overall_per_s": stats.seen / total,
            "steady_per_s": steady, "first_image_s": first, "after_last_image_s": tail, "times": timeline.times}


def part_throughput(args: argparse.Namespace, chain: list[str]) -> dict[str, Any]:
    site = make_site(args.tags, args.per_tag, args.latency_ms)
    results: dict[str, Any] = {}
    try:
        for contexts in (1, args.contexts):
            with tempfile.TemporaryDirectory() as tmp:
                r = asyncio.run(scrape_once(site, Path(tmp), contexts, chain, workers=max(4, contexts)))
            r.pop("times")
            r["bound_per_s"] = contexts / (args.latency_ms / 1000)
            results[f"{contexts}_contexts"] = r
    finally:
        site.stop()
    one, many = results["1_contexts"], results[f"{args.contexts}_contexts"]
    print(f"\nPart 1: {args.tags} hashtags x {args.per_tag} posts, latency {args.latency_ms:g} ms per response, "
          f"chain {','.join(chain)}")
    print(f"{'contexts':>8} {'images':>7} {'total s':>8} {'img/s overall':>14} {'img/s steady':>13} "
          f"{'bound img/s':>12} {'steady/bound':>13}")
    for contexts, r in ((1, one), (args.contexts, many)):
        print(f"{contexts:>8} {r['images']:>7} {r['total_s']:>8.1f} {r['overall_per_s']:>14.1f} "
              f"{r['steady_per_s']:>13.1f} {r['bound_per_s']:>12.1f} {r['steady_per_s'] / r['bound_per_s']:>13.0%}")
        print(f"{'':>8} first image after {r['first_image_s']:.1f} s (browser start, feed pages, pop-ups); "
              f"{r['after_last_image_s']:.1f} s from the last image to the end (closing)")
        if r["errors"]:
            print("   errors:", r["errors"])
    print(f"speed-up {args.contexts} vs 1 context: overall x{many['overall_per_s'] / one['overall_per_s']:.2f}, "
          f"steady x{many['steady_per_s'] / one['steady_per_s']:.2f} (bound x{args.contexts})")
    return results


def part_memory(args: argparse.Namespace, chain: list[str]) -> dict[str, Any]:
    tags = 4
    site = make_site(tags, -(-args.memory_images // tags), args.memory_latency_ms)
    sampler = MemorySampler()
    sampler.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            r = asyncio.run(scrape_once(site, Path(tmp), tags, chain, workers=4))
    finally:
        sampler.stop_event.set()
        sampler.join()
        site.stop()
    s = sampler.samples
    peak = {"python": max(x[1] for x in s), "chromium": max(x[2] for x in s), "driver": max(x[3] for x in s),
            "all_pss": max(x[4] for x in s)}
    times = r.pop("times")
    quarters = [sampler.at(times[max(0, int(len(times) * q) - 1)]) for q in (0.25, 0.5, 0.75, 1.0)]
    print(f"\nPart 2: {r['images']} images, {tags} hashtags at once, latency {args.memory_latency_ms:g} ms, "
          f"{r['total_s']:.1f} s ({r['overall_per_s']:.1f} img/s)")
    print(f"peak memory: Python {peak['python'] / MB:.0f} MB (RSS), Chromium {peak['chromium'] / MB:.0f} MB "
          f"(PSS summed over its processes), Playwright driver {peak['driver'] / MB:.0f} MB (RSS); all three "
          f"together {peak['all_pss'] / MB:.0f} MB (PSS, goal <= 1024 MB)")
    print("after 25/50/75/100% of the images (Python | Chromium | all PSS), MB: "
          + ", ".join(f"{q[1] / MB:.0f} | {q[2] / MB:.0f} | {q[4] / MB:.0f}" for q in quarters))
    if r["errors"]:
        print("   errors:", r["errors"])
    return {**r, "peak_rss_mb": {k: round(v / MB, 1) for k, v in peak.items()},
            "quarters_mb": [(round(q[1] / MB, 1), round(q[2] / MB, 1)) for q in quarters]}


CHAOS = dict(hung_beacons=True, hung_feed_every=3, drop_image_every=7, wrong_type_every=9, url_ttl_s=120.0,
             stale_url_share=0.2, account_block_after=3, account_block_s=2.0, late_dialog_ms=1500,
             unknown_consent=True, slow_first_byte_ms=150, require_api_headers=True)


def part_chaos(args: argparse.Namespace, chain: list[str]) -> dict[str, Any]:
    """Clean vs chaos: share gathered, images/s against the latency and rate-budget bound; stall to report."""
    rate = args.rate_per_minute / 60
    options = {"requests_per_minute": args.rate_per_minute, "burst": 1.0, "stall_s": args.stall_s}
    tags, per_tag = args.tags, args.chaos_per_tag
    pages_per_tag = -(-per_tag // 24)  # the tag page, then one feed call per further page
    images = tags * per_tag
    requests = images + tags * pages_per_tag
    bound = min(args.contexts / (args.latency_ms / 1000), rate * images / requests)
    results: dict[str, Any] = {"bound_per_s": bound}
    print(f"\nPart 3: clean vs chaos, {tags} hashtags x {per_tag} posts, latency {args.latency_ms:g} ms, "
          f"budget {args.rate_per_minute:g} requests/min (burst 1), {args.contexts} contexts")
    print(f"bound: min({args.contexts} contexts / {args.latency_ms:g} ms, {rate:.1f} req/s x {images} images / "
          f"{requests} requests) = {bound:.1f} images/s")
    print(f"{'run':>6} {'gathered':>9} {'share':>6} {'total s':>8} {'img/s steady':>13} {'of bound':>9}  errors")
    for name, chaos in (("clean", None), ("chaos", Chaos(seed=args.chaos_seed, **CHAOS))):
        site = make_site(tags, per_tag, args.latency_ms, chaos)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                r = asyncio.run(scrape_once(site, Path(tmp), args.contexts, chain, max(4, args.contexts), options,
                                            timeout_s=10.0))
        finally:
            site.stop()
        r.pop("times")
        r["share"] = r["images"] / images
        r["of_bound"] = r["steady_per_s"] / bound
        results[name] = r
        print(f"{name:>6} {r['images']:>9} {r['share']:>6.0%} {r['total_s']:>8.1f} {r['steady_per_s']:>13.1f} "
              f"{r['of_bound']:>9.0%}  {len(r['errors'])}" + (f" ({r['errors'][0][:100]}...)" if r["errors"] else ""))
    # A tag whose feed hangs after its first page: seconds from its last new post to the report.
    site = make_site(2, 40, args.latency_ms, Chaos(hung_feed_tags=("tag0",)))
    states = States()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            r = asyncio.run(scrape_once(site, Path(tmp), 2, chain, 4, {**options, "requests_per_minute": 1e6},
                                        timeout_s=10.0, states=states))
    finally:
        site.stop()
    hung = [(t, s) for t, job, s in states.seen if job == "tag0"]
    last_post = max(t for t, job in states.images if job == "tag0")
    reported = min(t for t, s in hung if s.startswith("stalled on"))
    failed = max(t for t, s in hung if s == "failed")
    results["stall"] = {"stall_s": args.stall_s, "to_report_s": reported - last_post, "to_failure_s": failed - last_post,
                        "other_job": [s for _, job, s in states.seen if job == "tag1"][-1]}
    print(f"stall (stall_s {args.stall_s:g}, browser.timeout_s 10): report {reported - last_post:.1f} s after the "
          f"last new post, job failed {failed - last_post:.1f} s after it; the other tag ended "
          f"'{results['stall']['other_job']}'")
    return results


def part_budget(args: argparse.Namespace, chain: list[str]) -> dict[str, Any]:
    """The rate budget used: images/s against the bound the budget and the latency allow, with the
    default jitter and with none (jitter spreads requests; it must not lower the rate)."""
    rate = args.budget_per_minute / 60
    tags, per_tag, latency = args.budget_tags, args.budget_per_tag, args.budget_latency_ms / 1000
    pages_per_tag = -(-per_tag // 24)
    images = tags * per_tag
    requests = images + tags * pages_per_tag
    bound = min(tags / latency, rate * images / requests)  # one download at a time per context
    print(f"\nBudget: {tags} hashtags x {per_tag} posts, latency {args.budget_latency_ms:g} ms, budget "
          f"{args.budget_per_minute:g} requests/min (burst {args.budget_burst:g}), {tags} contexts")
    print(f"bound: min({tags} contexts / {args.budget_latency_ms:g} ms, {rate:.1f} req/s x {images} images / "
          f"{requests} requests) = {bound:.2f} images/s")
    print(f"{'jitter_s':>8} {'images':>7} {'total s':>8} {'img/s steady':>13} {'of bound':>9}")
    results: dict[str, Any] = {"bound_per_s": bound}
    for jitter in (args.budget_jitter_s, 0.0):
        site = make_site(tags, per_tag, args.budget_latency_ms)
        options = {"requests_per_minute": args.budget_per_minute, "burst": args.budget_burst, "jitter_s": jitter}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                r = asyncio.run(scrape_once(site, Path(tmp), tags, chain, max(4, tags), options))
        finally:
            site.stop()
        r.pop("times")
        r["of_bound"] = r["steady_per_s"] / bound
        results[f"jitter_{jitter:g}"] = r
        print(f"{jitter:>8g} {r['images']:>7} {r['total_s']:>8.1f} {r['steady_per_s']:>13.2f} {r['of_bound']:>9.0%}"
              + (f"  errors: {r['errors'][:1]}" if r["errors"] else ""))
    return results


def part_lean(args: argparse.Namespace, chain: list[str]) -> dict[str, Any]:
    """What the browser costs per stored image: bytes the site sent per image against the stored
    file's size (goal <= 1.3x), and the peak PSS of Python + Playwright's driver + Chromium with
    4 hashtags at once (goal <= 1 GB). Real rendered 1080 px photos here, as a real feed has."""
    tags = 4
    site = make_site(tags, args.lean_per_tag, args.memory_latency_ms, real_images=True)
    for tag in site.tags:  # rendered before the clock starts: the site's work is not the scraper's
        for post in site.posts(tag):
            site.media_bytes(post, 1080)
    site.bytes_sent.clear()
    sampler = MemorySampler()
    sampler.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            r = asyncio.run(scrape_once(site, Path(tmp), tags, chain, workers=4))
            stored = sum(f.stat().st_size for f in Path(tmp).rglob("*.jpg"))
    finally:
        sampler.stop_event.set()
        sampler.join()
        site.stop()
    images = max(1, r["images"])
    sent = sum(site.bytes_sent.values())
    ratio = sent / stored if stored else float("inf")
    peak = max(x[4] for x in sampler.samples)
    parts = max(sampler.samples, key=lambda x: x[4])
    print(f"\nLean browser: {r['images']} images, {tags} hashtags at once, real 1080 px photos")
    print(f"bytes sent by the site per stored image: {sent / images / 1024:.0f} KiB for {stored / images / 1024:.0f} KiB "
          f"stored = {ratio:.2f}x (goal <= 1.3x); by kind: "
          + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(site.bytes_sent.items())))
    print(f"peak memory (PSS) of Python + driver + Chromium: {peak / MB:.0f} MB (goal <= 1024 MB); at that peak "
          f"Python {parts[1] / MB:.0f} MB RSS, Chromium {parts[2] / MB:.0f} MB PSS, driver {parts[3] / MB:.0f} MB RSS")
    if r["errors"]:
        print("   errors:", r["errors"][:2])
    r.pop("times")
    return {**r, "bytes_per_stored": ratio, "bytes_sent": dict(site.bytes_sent), "stored_bytes": stored,
            "peak_pss_mb": round(peak / MB, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--tags", type=int, default=4)
    ap.add_argument("--per-tag", type=int, default=60)
    ap.add_argument("--contexts", type=int, default=4)
    ap.add_argument("--memory-images", type=int, default=2000)
    ap.add_argument("--memory-latency-ms", type=float, default=5.0)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-chaos", action="store_true")
    ap.add_argument("--chaos-per-tag", type=int, default=48)
    ap.add_argument("--rate-per-minute", type=float, default=1200.0, help="the rate budget of part 3")
    ap.add_argument("--stall-s", type=float, default=10.0)
    ap.add_argument("--chaos-seed", type=int, default=7)
    ap.add_argument("--chain", default="decode,store")
    ap.add_argument("--skip-budget", action="store_true")
    ap.add_argument("--budget-tags", type=int, default=2)
    ap.add_argument("--budget-per-tag", type=int, default=60)
    ap.add_argument("--budget-latency-ms", type=float, default=120.0, help="a realistic round trip")
    ap.add_argument("--budget-per-minute", type=float, default=600.0)
    ap.add_argument("--budget-burst", type=float, default=3.0, help="requests allowed back to back")
    ap.add_argument("--budget-jitter-s", type=float, default=0.5, help="the default jitter_s")
    ap.add_argument("--skip-lean", action="store_true")
    ap.add_argument("--lean-per-tag", type=int, default=30)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    chain = [c.strip() for c in args.chain.split(",") if c.strip()]
    print(f"CPU: {psutil.cpu_count()} cores, shared with other work while this runs; figures vary by run.")
    results: dict[str, Any] = {}
    if not args.skip_budget:
        results["budget"] = part_budget(args, chain)
    if not args.skip_lean:
        results["lean"] = part_lean(args, chain)
    if not args.skip_throughput:
        results["throughput"] = part_throughput(args, chain)
    if not args.skip_chaos:
        results["chaos"] = part_chaos(args, chain)
    if not args.skip_memory:
        results["memory"] = part_memory(args, chain)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
