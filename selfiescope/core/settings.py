"""settings.toml: the one documented home of every setting.

The file is read with :mod:`tomllib`, environment variables ``SELFIESCOPE_A__B=value``
override ``[a] b`` (values parsed as TOML where they parse, strings otherwise), and the
result is validated by pydantic. Unknown keys are errors. Component options
(``[plugins.NAME]`` and ``[pipelines.P.options.NAME]``) are validated against the
component's own ``Options`` model once plugins are loaded (:mod:`.checks`).
Secrets never live here: credentials come from the environment or a session file.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

# SettingsError and env_overrides are this module's API too (where they are defined is a detail).
from .settings_input import SettingsError, deep_merge, env_overrides, nul_problems, read_settings_text  # noqa: F401
from .text import expand_user, has_userinfo, path_text_problem, printable

from .text import has_userinfo, redact_url

SECRET_WORDS = ("password", "passwd", "secret", "token", "cookie", "username")
# A label becomes a folder name under the storage root and a column value everywhere:
# plain ASCII, starting with a letter or digit, short. Checked where a label enters
# (settings, CLI options), so nothing fails later at the first write.
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LABEL_RULE = "1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit (it becomes a folder name)"


def check_label(value: str) -> str:
    """``value`` if it is a valid label, else ValueError saying the rule."""
    if not isinstance(value, str) or not LABEL_PATTERN.match(value):
        raise ValueError(f"invalid label {value!r}: use {LABEL_RULE}")
    return value


def _usable_path(value: Any) -> Any:
    """A path setting that cannot name a file (an unknown ``~user``) is refused where it is read."""
    if isinstance(value, str | Path) and (problem := path_text_problem(value)):
        raise ValueError(problem)
    return value


UsablePath = Annotated[Path, BeforeValidator(_usable_path)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StorageSettings(Strict):
    root: Path = Path("data")
    backend: str = "files"
    wait_for_lock: bool = Field(False, description="wait for another run that writes to the same root (else exit 2)")
    lock_timeout_s: float = Field(3600.0, gt=0, description="longest wait for the root's lock with wait_for_lock")

    @field_validator("root", mode="before")
    @classmethod
    def _expand_root(cls, v: Any) -> Any:
        if isinstance(v, str | Path):
            if not str(v).strip():
                raise ValueError("must not be empty (a folder such as \"data\")")
            return str(expand_user(v))  # a str: JSON-mode validation (Dask workers) takes no Path
        return v


class BrowserSettings(Strict):
    executable: str = "auto"  # a path, or "auto"
    headless: bool = True
    max_contexts: int = Field(4, ge=1, le=64)
    recycle_after: int = Field(50, ge=1, description="navigations before a page is recycled")
    block: list[Literal["font", "media", "image", "stylesheet", "trackers"]] = ["font", "media", "trackers"]
    session_file: UsablePath = Path("~/.config/selfiescope/instagram-session.json")
    timeout_s: float = Field(30.0, gt=0)
    launch_timeout_s: float = Field(120.0, gt=0, description="longest wait for Chromium (and Playwright) to start; "
                                    "a busy machine is slow to start it, which is not the site's fault")
    extra_args: list[str] = []
    # Record / replay (selfiescope record, scrape --replay): see selfiescope/core/har.py.
    record_har: UsablePath | None = Field(None, description="record every context into parts next to this HAR file")
    replay_har: UsablePath | None = Field(None, description="answer every request from this HAR file, offline")
    proxy: str | None = Field(None, description="HTTP(S)/SOCKS proxy server for the browser and its downloads, e.g. "
                              "\"http://proxy.corp:3128\"; credentials from SELFIESCOPE_PROXY_USERNAME / _PASSWORD")
    proxy_bypass: list[str] = Field([], description="hosts reached without the proxy, e.g. [\".corp.example\"]")

    @field_validator("proxy")
    @classmethod
    def _proxy_server(cls, v: str | None) -> str | None:
        from .proxy import check_proxy_url

        return check_proxy_url(v)


class EngineSettings(Strict):
    workers: int = Field(4, ge=1, le=256, description="images processed concurrently")
    queue_size: int = Field(32, ge=1, description="events buffered between sources and workers")
    threads: int = Field(0, ge=0, description="worker threads for CPU steps; 0 = number of cores")


class LoggingSettings(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None

    @field_validator("file", mode="before")
    @classmethod
    def _expand_file(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            return None
        return str(expand_user(v)) if isinstance(v, str | Path) else v


# A Dask scheduler: "local", or [tcp|tls|ws|wss|ucx://]host:port (Dask's own address forms).
SCHEDULER_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}/?$")


def check_scheduler(value: str) -> str:
    """``value`` if it names a Dask scheduler, else ValueError saying the forms."""
    if value == "local" or value.startswith("inproc://") or SCHEDULER_ADDRESS.match(value):
        return value
    raise ValueError(f"'{printable(value)}' is not a scheduler address: use 'local' or tcp://HOST:PORT")


class ComputeSettings(Strict):
    engine: Literal["local", "dask"] = "local"
    scheduler: Annotated[str, AfterValidator(check_scheduler)] = "local"
    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1)
    worker_steps: list[str] | None = Field(
        None,
        description="narrow the chain steps that run on Dask workers to these (each must be worker_safe); "
        "default: the longest leading run of worker_safe steps runs there, the rest on the client",
    )
    dashboard: str = Field("", description="LocalCluster dashboard address such as ':8787' (needs bokeh); '' = off")
    connect_timeout_s: float = Field(30.0, gt=0)
    min_rows_per_worker: int = Field(
        1000, ge=1, description="LightGBM on Dask: rows per worker below which fewer workers train"
    )


class PrivacySettings(Strict):
    """What the dataset keeps about the people in it (docs/architecture.md, "Privacy")."""

    store_captions: bool = Field(False, description="keep post captions in the manifest")
    strip_metadata: Literal["location", "all", "none"] = Field(
        "location", description="metadata removed from stored copies (ids stay those of the original bytes)"
    )


class PipelineBase(Strict):
    description: str = ""
    options: dict[str, dict[str, Any]] = {}

    @field_validator("options")
    @classmethod
    def _no_credentials_in_urls(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        problems = [p for name, opts in v.items() for key, value in opts.items()
                    for p in _urls_with_credentials(value, f"{name}.{key}")]
        if problems:
            raise ValueError("; ".join(problems))
        return v


# Built-in defaults by role (the only place core and pipelines name built-in components):
# the source that reads a folder, the default scrape source, the filter steps, the dedup step, the step that stores.
FOLDER_SOURCE = "folder"
SCRAPE_SOURCE = "instagram"  # what `scrape` and `record` use without --source
DECODE_STEP = "decode"
FILTER_STEPS = (DECODE_STEP, "face_area")
DEDUP_STEP = "dedup"
STORE_STEP = "store"


class ScrapePipeline(PipelineBase):
    """Collect images from a source through the chain into storage."""

    kind: Literal["scrape", "import"]
    source: str
    hashtags: list[str] = []
    paths: list[UsablePath] = []
    urls: list[str] = []
    label: str
    limit: int | None = Field(None, ge=1)
    chain: list[str] = Field([*FILTER_STEPS, DEDUP_STEP, STORE_STEP], min_length=1)
    stop_after_known: int | None = Field(
        None, ge=1, description="end a job after this many posts in a row that the dataset already has")
    since: datetime | None = Field(
        None, description="fetch no post older than this (ISO date or datetime; UTC unless it says otherwise)")
    # Set only by code that builds a pipeline to report on images, never from settings (``clean``
    # without --output): such a chain may store nothing.
    _report_only: bool = PrivateAttr(default=False)

    @field_validator("since", mode="before")
    @classmethod
    def _since_datetime(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):  # a TOML date: its midnight
            return datetime(v.year, v.month, v.day)
        return v

    @field_validator("since", mode="after")
    @classmethod
    def _since_aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=timezone.utc)
        return v

    @field_validator("label")
    @classmethod
    def _safe_label(cls, v: str) -> str:
        return check_label(v)

    @field_validator("hashtags")
    @classmethod
    def _strip_hash(cls, v: list[str]) -> list[str]:
        return [t.lstrip("#").strip() for t in v]

    @field_validator("urls")
    @classmethod
    def _no_credentials(cls, v: list[str]) -> list[str]:
        if problems := _urls_with_credentials(v, "urls"):
            raise ValueError("; ".join(problems))
        return v

    @field_validator("paths", mode="after")
    @classmethod
    def _expand_paths(cls, v: list[Path]) -> list[Path]:
        return [p.expanduser() for p in v]

    def targets(self) -> list[str]:
        return [*self.hashtags, *(str(p) for p in self.paths), *self.urls]


class TrainPipeline(PipelineBase):
    """Build features from the stored dataset and train a classifier."""

    kind: Literal["train"]
    labels: list[str] = ["selfie", "portrait"]
    features: list[str] = ["geometry", "landmarks", "embedding", "image"]
    folds: int = Field(5, ge=2)
    model_dir: UsablePath = Path("models/latest")
    params: dict[str, Any] = {}
    report: bool = True
    seed: int = 0
    dataset_root: UsablePath | None = Field(None, description="folder holding manifest.sqlite; default storage.root")
    group_distance: int = Field(
        16, ge=0, le=64,
        description="pHash distance within which images share a CV group (looser than dedup's, which rejected closer)",
    )
    person_distance: float = Field(
        0.6, gt=0, le=2, description="face-descriptor distance within which two faces are one person (a CV group)"
    )
    group_by_person: bool = Field(
        True, description="compute the face descriptor (dlib, about 0.1 s a face, cached) to group CV by person also "
                          "when 'embedding' is not among the features; false: not grouped by person"
    )
    early_stopping_rounds: int = Field(50, ge=1)
    workers: int = Field(0, ge=0, description="feature-extraction processes; 0 = number of cores")
    normalize: bool = Field(
        False, description="crop every image to a square around its face (bars and metadata gone), one size and "
                           "JPEG quality, before features (the report shows both)"
    )
    normalize_side: int = Field(320, ge=64, le=4096, description="normalize: the square's side in pixels")
    normalize_quality: int = Field(85, ge=10, le=100, description="normalize: JPEG quality")

    @field_validator("labels")
    @classmethod
    def _safe_labels(cls, v: list[str]) -> list[str]:
        for label in v:
            check_label(label)
        return v  # exactly two, distinct: checked by the train pipeline, which says how


class DemoPipeline(PipelineBase):
    kind: Literal["demo"]


Pipeline = Annotated[Union[ScrapePipeline, TrainPipeline, DemoPipeline], Field(discriminator="kind")]


class Settings(Strict):
    storage: StorageSettings = StorageSettings()
    browser: BrowserSettings = BrowserSettings()
    engine: EngineSettings = EngineSettings()
    logging: LoggingSettings = LoggingSettings()
    compute: ComputeSettings = ComputeSettings()
    privacy: PrivacySettings = PrivacySettings()
    plugins: dict[str, Any] = Field(
        {}, description="[plugins.NAME] component options; [plugins] disable = [plugin names] turns plugins off"
    )
    pipelines: dict[str, Pipeline] = {}
    # Where these settings were read (a file, "the environment"): errors found later name it.
    _source: str = PrivateAttr(default="settings")

    @property
    def source(self) -> str:
        return self._source

    @field_validator("plugins")
    @classmethod
    def _plugin_tables(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if key == "disable":
                if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                    raise ValueError("disable: a list of plugin names, such as [\"gallery\"]")
            elif not isinstance(value, dict):
                raise ValueError(f"{key}: options of component {key!r} are a table ([plugins.{key}])")
        return v

    @property
    def disabled_plugins(self) -> list[str]:
        """``[plugins] disable``: plugin modules not to load (built-in aliases or entry-point names)."""
        return list(self.plugins.get("disable", []))

    def component_options(self, name: str, pipeline: PipelineBase | None = None) -> dict[str, Any]:
        merged = dict(self.plugins.get(name, {}))
        if pipeline is not None:
            merged.update(pipeline.options.get(name, {}))
        return merged

    def pipeline(self, name: str) -> PipelineBase:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines)) or "none defined"
            raise SettingsError([f"pipelines.{name}: no such pipeline (known: {known})"]) from None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("scrape", "import", "train", "demo") and out.count(".") >= 1:
            continue  # discriminator tag that pydantic inserts into the path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = _format_loc(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown pipeline kind {e.get('input', {}).get('kind')!r} (expected scrape, import, train or demo)"
        elif e["type"] == "union_tag_not_found":
            msg = "missing key 'kind' (scrape, import, train or demo)"
        elif e["type"] == "too_short" and loc.endswith(".chain"):
            msg = (f"an empty chain would accept every image and store none: list the steps, "
                   f"e.g. {[*FILTER_STEPS, DEDUP_STEP, STORE_STEP]}")
        elif e["type"] == "value_error":  # our own validators' messages name the value already
            msg = msg.removeprefix("Value error, ")
        elif "input" in e and not isinstance(e["input"], dict | list):
            shown = redact_url(e["input"]) if isinstance(e["input"], str) else e["input"]  # no user:password@
            msg = f"{msg} (got {shown!r})"
        problems.append(f"{loc}: {msg}")
    return problems


def _urls_with_credentials(value: Any, here: str) -> list[str]:
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _urls_with_credentials(item, f"{here}[{i}]")]
    if isinstance(value, str) and has_userinfo(value):
        return [f"{here}: the URL holds credentials (user:password@); remove them and use the environment "
                "or the plugin's login command instead"]
    return []


def _reject_secrets(data: dict[str, Any], path: str = "") -> list[str]:
    problems = []
    for k, v in data.items():
        here = f"{path}.{k}" if path else k
        if isinstance(v, dict):
            problems += _reject_secrets(v, here)
            continue
        problems += _urls_with_credentials(v, here)
        if any(w in k.lower() for w in SECRET_WORDS) and k.lower() != "session_file":
            problems.append(
                f"{here}: credentials do not belong in settings; set them in the environment variables "
                "the plugin reads (`selfiescope plugins` lists them) or use its login command"
            )
    return problems


def load_settings(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read, merge with the environment and validate. Raises :class:`SettingsError`."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get("SELFIESCOPE_SETTINGS", "settings.toml")
    if problem := path_text_problem(path):
        raise SettingsError([problem], "--settings")
    path = Path(path).expanduser()
    data: dict[str, Any] = {}
    overrides = env_overrides(environ)
    source = printable(path) if os.path.lexists(path) else ("the environment" if overrides else "the defaults (no settings file)")
    if os.path.lexists(path):
        try:
            data = tomllib.loads(read_settings_text(path))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError([f"not valid TOML: {exc}"], printable(path)) from None
    elif path.name != "settings.toml" or path.parent != Path("."):
        raise SettingsError(["file not found"], printable(path))
    data = deep_merge(data, overrides)
    if problems := nul_problems(data) or _reject_secrets(data):
        raise SettingsError(problems, printable(path))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc), printable(path)) from None
    settings._source = source
    return settings


def settings_from_dict(data: dict[str, Any]) -> Settings:
    if problems := nul_problems(data):
        raise SettingsError(problems)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None
