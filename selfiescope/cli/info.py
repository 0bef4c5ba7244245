"""The informational commands: ``pipelines``, ``plugins``, ``settings check|show``, ``stats``,
and ``mock-site`` (the local Instagram-like site for demos and tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ..core.settings import ScrapePipeline, SettingsError
from ..core.checks import check_components, check_paths, file_to_write_problem
from ..core.manifest_io import writable
from ..core.text import printable
from ..exits import EXIT_USAGE
from .common import JsonOpt, SettingsOpt, console, core_app, emit_json, fail, load_app, out, settings_app, tagged


@core_app.command("pipelines")
def list_pipelines(settings_path: Optional[Path] = SettingsOpt, as_json: bool = JsonOpt) -> None:
    """List the pipelines defined in settings.toml."""
    settings = load_app(settings_path).settings
    rows = [
        {"name": name, "kind": p.kind, "description": p.description,
         **({"source": p.source, "targets": p.targets(), "label": p.label, "chain": p.chain}
            if isinstance(p, ScrapePipeline) else {})}
        for name, p in settings.pipelines.items()
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table("name", "kind", "source", "targets", "label", "chain")
    for r in rows:
        table.add_row(r["name"], r["kind"], r.get("source", ""), " ".join(r.get("targets", [])),
                      r.get("label", ""), " → ".join(r.get("chain", [])))
    out.print(table)


@core_app.command("plugins")
def list_plugins(settings_path: Optional[Path] = SettingsOpt, as_json: bool = JsonOpt) -> None:
    """List the plugins: what each provides, adds and reads, and which ones settings disable.

    For each loaded plugin: the components it provides by kind, the commands it adds, the
    environment variables its sources read, its hooks and where it comes from; then the ones
    the settings' plugins.disable list turns off."""
    from .build import build_app

    application = load_app(settings_path)
    registry = application.registry
    pm = registry.pm
    dists = {id(p): f"{d.project_name} {d.version}" for p, d in pm.list_plugin_distinfo()}
    rows: list[dict[str, Any]] = [
        {"plugin": regname, "status": "disabled", "origin": "built-in" if regname.startswith("selfiescope.") else name,
         "components": [], "commands": [], "environment": [], "hooks": [], "state": []}
        for name, regname in registry.disabled.items()
    ]
    _, commands = build_app(application)
    for plugin_name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked: a disabled plugin, listed above
            continue
        mine = [i for i in registry.info if i.plugin == plugin_name]
        rows.insert(len(rows) - sum(r["status"] == "disabled" for r in rows), {
            "plugin": plugin_name,
            "status": "loaded",
            "origin": dists.get(id(plugin), "built-in"),
            "components": [f"{i.kind}:{i.name}" for i in mine],
            "commands": commands.by_plugin.get(plugin_name, []),
            "environment": sorted({e for i in mine for e in getattr(i.cls, "credential_env", ())}),
            "hooks": registry.hooks_of(plugin_name),
            # the tables it keeps in a dataset's manifest (forget removes their rows of an image)
            "state": sorted({t for i in mine if (s := getattr(i.cls, "state", None)) for t in s.full_names().values()}),
        })
    if as_json:
        emit_json(rows)
    else:
        _plugins_table(rows)
    for problem in commands.problems:
        console.print(tagged("warning:", "yellow", f" {problem}"), highlight=False)


def _plugins_table(rows: list[dict[str, Any]]) -> None:
    table = Table("plugin", "from", "provides", "commands", "hooks")
    for r in rows:
        name = r["plugin"].removeprefix("selfiescope.plugins.")
        if r["status"] == "disabled":
            table.add_row(tagged(name, "dim"), r["origin"], tagged("disabled", "yellow", " (plugins.disable)"), "", "")
            continue
        by_kind: dict[str, list[str]] = {}
        for kind, _, comp in (c.partition(":") for c in r["components"]):
            by_kind.setdefault(kind, []).append(comp)
        provides = [f"{kind}: {', '.join(names)}" for kind, names in by_kind.items()]
        provides += [f"env: {', '.join(r['environment'])}"] if r["environment"] else []
        provides += [f"tables: {', '.join(r['state'])}"] if r["state"] else []
        table.add_row(name, r["origin"], "; ".join(provides), ", ".join(r["commands"]),
                      ", ".join(h.removeprefix("selfiescope_") for h in r["hooks"]))
    out.print(table)


@settings_app.command("check")
def settings_check(settings_path: Optional[Path] = SettingsOpt, as_json: bool = JsonOpt) -> None:
    """Validate settings.toml, including plugin names and plugin options."""
    application = load_app(settings_path)
    settings = application.settings
    problems = check_components(settings, application.registry) + check_paths(settings)
    if as_json:
        emit_json({"ok": not problems, "problems": problems})
    elif problems:
        console.print(SettingsError(problems, str(settings_path or "settings.toml")).render(), markup=False)
    else:
        out.print(f"settings OK: {len(settings.pipelines)} pipelines")
    if problems:
        raise typer.Exit(EXIT_USAGE)


@settings_app.command("show")
def settings_show(settings_path: Optional[Path] = SettingsOpt) -> None:
    """Print the effective settings (file + environment overrides + defaults) as JSON."""
    emit_json(load_app(settings_path).settings.model_dump(mode="json"))



# --- stats: choose the face-area threshold with data ---------------------------------------
def _run_statuses(root: Path) -> dict[str, int]:
    """Runs per status, read without writing (a killed run counts as interrupted)."""
    from ..core.manifest import Manifest
    from ..core.manifest_readonly import ManifestUnreadable
    from ..pipelines.dataset_care.card import run_statuses

    try:
        manifest = Manifest.read_only(root)
    except ManifestUnreadable:
        return {}
    try:
        return run_statuses(manifest)
    finally:
        manifest.close()


@core_app.command("stats")
def stats_command(
    root: Optional[Path] = typer.Option(None, "--root", help="dataset folder holding manifest.sqlite (default: storage.root)"),
    plot: Optional[Path] = typer.Option(None, "--face-area-plot", help="PNG to write (default: ROOT/face-area-thresholds.png)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """How many images per label each face-area threshold keeps (a table and a PNG plot), and the rejections by reason."""
    from ..pipelines.model.face_stats import current_threshold, face_area_stats, face_filters

    application = load_app(settings_path)
    settings, registry = application.settings, application.registry
    root = Path(root or settings.storage.root)
    if plot is not None:  # the user's own file: it must be writable before any work
        if plot.suffix.lower() != ".png":
            raise fail(f"--face-area-plot: {printable(plot)}: give a .png file name")
        if why := file_to_write_problem(plot):
            raise fail(f"--face-area-plot: {why}")
    if not (root / "manifest.sqlite").is_file():
        raise fail(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist (collect or import images first)")
    filters = face_filters(registry)
    current = current_threshold(settings, registry, filters)
    # A read-only dataset is still read: the plot then goes only where --face-area-plot says.
    default_plot = root / "face-area-thresholds.png" if writable(root) else None
    result = face_area_stats(root, plot or default_plot, current, filters)
    result["runs_by_status"] = _run_statuses(root)
    if as_json:
        emit_json(result)
        return
    if result["rejections"]:
        rejected = Table(title="rejections (step or source / reason)")
        rejected.add_column("rejected by / reason")
        rejected.add_column("images or posts")
        rejected.add_column("decided by (now)")
        from ..pipelines.dataset_care.class_losses import setting_text

        for key, n in result["rejections"].items():
            rejected.add_row(key, str(n), setting_text(key.rsplit("/", 1)[-1], settings) or "")
        out.print(rejected)
    if stopped := result["runs_by_status"].get("interrupted"):
        console.print(f"{stopped} earlier run(s) were interrupted or killed before they finished; "
                      "the next run resumes their work")
    if not result["kept"]:
        out.print("no image has been through the face filter yet")
        return
    columns = list(next(iter(result["kept"].values())))
    table = Table(title=f"images kept per face-area threshold, {root}")
    for col in ("label", "judged", *columns):
        table.add_column(col)
    for key, kept in result["kept"].items():
        table.add_row(key, str(result["judged"][key]), *(str(kept[c]) for c in columns))
    out.print(table)
    if result["plot"]:
        out.print(f"plot: {result['plot']}", markup=False)
    else:
        console.print(f"no plot: {root} is read-only; pass --face-area-plot FILE to write one elsewhere", markup=False)



# --- mock-site (the local Instagram-like site: selfiescope/testing/site.py) ------------------
@core_app.command("mock-site")
def mock_site_command(
    port: int = typer.Option(8000, min=0, max=65535, help="port to listen on (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    latency_ms: float = typer.Option(0, "--latency-ms", min=0, help="delay every response by this much"),
    no_login: bool = typer.Option(False, "--no-login", help="serve hashtag pages without the login wall"),
    rate_limit_every: int = typer.Option(0, min=0, help="answer every n-th API request 429 (0: never)"),
    retry_after: float = typer.Option(1.0, min=0, help="seconds in the 429 answers' Retry-After"),
    image_error_every: int = typer.Option(0, min=0, help="fail every n-th media request once with 500 (0: never)"),
    page_size: int = typer.Option(12, min=1, help="posts per page of a hashtag feed"),
    language: str = typer.Option("en", help="language of the pop-ups: en, fr or de"),
    two_factor_code: Optional[str] = typer.Option(None, help="ask for this security code after the password"),
    username: str = typer.Option("demo", help="the mock site's (fake) account"),
    password: str = typer.Option("demo", help="the mock site's (fake) account password"),
    seed: int = typer.Option(0, help="seed of the generated posts and photos"),
    chaos: str = typer.Option(
        "", "--chaos",
        help="misbehaviour knobs, comma-separated: e.g. hung_beacons,client_feed,url_ttl_s=30,stale_url_share=0.3,"
        "account_block_after=0,login_variant=labels (all: selfiescope/testing/chaos.py)",
    ),
    chaos_seed: int = typer.Option(0, "--chaos-seed", help="seed of the chaos knobs' random choices"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line with the URL once serving"),
    settings_path: Optional[Path] = SettingsOpt,
) -> None:
    """Serve the local Instagram-like site with synthetic photos until Ctrl-C (for demos and scraper tests)."""
    from ..testing.chaos import Chaos
    from ..testing.site import MockInstagram

    load_app(settings_path)  # like every command: a broken plugin that settings do not disable is one clear error

    if language not in ("en", "fr", "de"):
        raise fail(f"--language: expected en, fr or de, not {language!r}")
    try:
        knobs = Chaos.parse(chaos, seed=chaos_seed)
    except (TypeError, ValueError) as exc:
        raise fail(f"--chaos: {exc}") from None
    try:
        site = MockInstagram(
            chaos=knobs, seed=seed, latency_ms=latency_ms, page_size=page_size, require_login=not no_login, username=username,
            password=password, two_factor_code=two_factor_code, rate_limit_every=rate_limit_every,
            retry_after_s=retry_after, consent_language=language, image_error_every=image_error_every,
        )
        base_url = site.start(port, host)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    tags = list(site.tags)
    try:  # a Ctrl-C right after the address is printed must stop cleanly too
        if as_json:
            print(json.dumps({"base_url": base_url, "tags": tags, "require_login": not no_login}), flush=True)
        else:
            login_note = "no login needed" if no_login else f"log in as {username!r}"
            out.print(f"Mock Instagram at {base_url} ({login_note}); hashtags: {', '.join(tags)}. Ctrl-C stops it.")
            sys.stdout.flush()
        site.serve_forever()
    except KeyboardInterrupt:
        site.stop()
