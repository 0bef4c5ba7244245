"""The settings of the ``instagram`` source (``[plugins.instagram]``) and the pop-up buttons it
presses first; the source, ``selfiescope login`` and ``selfiescope doctor`` share them."""

from __future__ import annotations

from pydantic import Field

from ...api import Options

# Buttons known to close a pop-up while granting the least. Unknown dialogs are handled by
# core.web's decline / close patterns; this list only goes first.
DISMISS_BUTTONS: dict[str, list[str]] = {
    "en": ["Decline optional cookies", "Only allow essential cookies", "Not now", "Not Now", "Cancel"],
    "fr": ["Refuser les cookies optionnels", "Autoriser uniquement les cookies essentiels", "Plus tard",
           "Pas maintenant"],
    "de": ["Optionale Cookies ablehnen", "Nur erforderliche Cookies erlauben", "Jetzt nicht", "Später"],
    "es": ["Rechazar cookies opcionales", "Permitir solo cookies necesarias", "Ahora no"],
    "it": ["Rifiuta cookie facoltativi", "Consenti solo i cookie essenziali", "Non ora"],
    "pt": ["Recusar cookies opcionais", "Permitir somente cookies essenciais", "Agora não", "Agora nao"],
}


def dismiss_names(languages: list[str]) -> list[str]:
    """The known pop-up buttons of ``languages``, pressed first (:data:`DISMISS_BUTTONS`)."""
    return [n for lang in languages for n in DISMISS_BUTTONS.get(lang, [])]


class InstagramOptions(Options):
    base_url: str = "https://www.instagram.com"
    login: bool = Field(True, description="log in with the environment's credentials at a login wall")
    scroll_pause_s: float = Field(2.0, gt=0, description="longest wait for the feed to grow after a scroll")
    max_idle_scrolls: int = Field(3, ge=1, description="scrolls without growth before the feed counts as ended")
    requests_per_minute: float = Field(60.0, gt=0, description="per-account budget, kept across runs")
    burst: float | None = Field(None, gt=0, description="requests allowed back to back (default: a tenth of a minute's)")
    jitter_s: float = Field(0.5, ge=0, description="random delay, within its slot, of a request the budget held back (at most this)")
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    retries: int = Field(3, ge=0, description="retries of a download after a 5xx or a timeout")
    backoff_s: float = Field(1.0, ge=0)
    max_retry_after_s: float = Field(900.0, ge=0, description="a longer 429 wait stops the source instead")
    max_restarts: int = Field(2, ge=0, description="browser relaunches per job after a crash")
    languages: list[str] = Field(list(DISMISS_BUTTONS), description="languages of pop-up buttons to close")
    block_page_images: bool = Field(True, description="the page loads no images, videos or fonts: the feed's JSON says "
                                                      "what to download")
    stall_s: float = Field(60.0, gt=0, description="no new post for this long: reload the tag page once, then fail the job")
