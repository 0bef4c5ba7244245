"""HTML of the mock Instagram site (see :mod:`selfiescope.testing.site`).

Markup follows Instagram's shape where scrapers look (roles, accessible names, the
grid of ``<article>`` tiles); class names are random strings chosen per site, so a
scraper that works here relies on roles and names, as it must on the real site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "consent_title": "Allow the use of cookies from Instagram on this browser?",
        "consent_allow": "Allow all cookies",
        "consent_decline": "Decline optional cookies",
        "save_title": "Save your login info?",
        "save_yes": "Save info",
        "save_no": "Not now",
        "notif_title": "Turn on Notifications",
        "notif_body": "Know right away when people follow you or like and comment on your photos.",
        "notif_yes": "Turn On",
        "notif_no": "Not Now",
        "login_user": "Mobile number, username or email address",
        "login_password": "Password",
        "login_button": "Log in",
    },
    "fr": {
        "consent_title": "Autoriser l’utilisation des cookies d’Instagram sur ce navigateur ?",
        "consent_allow": "Autoriser tous les cookies",
        "consent_decline": "Refuser les cookies optionnels",
        "save_title": "Enregistrer vos identifiants ?",
        "save_yes": "Enregistrer les identifiants",
        "save_no": "Plus tard",
        "notif_title": "Activer les notifications",
        "notif_body": "Sachez tout de suite quand des personnes vous suivent ou aiment vos photos.",
        "notif_yes": "Activer",
        "notif_no": "Plus tard",
        "login_user": "Numéro de mobile, nom de profil ou adresse e-mail",
        "login_password": "Mot de passe",
        "login_button": "Se connecter",
    },
    "de": {
        "consent_title": "Erlauben, dass Cookies von Instagram in diesem Browser verwendet werden?",
        "consent_allow": "Alle Cookies erlauben",
        "consent_decline": "Optionale Cookies ablehnen",
        "save_title": "Anmeldeinformationen speichern?",
        "save_yes": "Informationen speichern",
        "save_no": "Jetzt nicht",
        "notif_title": "Benachrichtigungen aktivieren",
        "notif_body": "Erfahre sofort, wenn dir jemand folgt oder deine Fotos mit „Gefällt mir“ markiert.",
        "notif_yes": "Aktivieren",
        "notif_no": "Jetzt nicht",
        "login_user": "Handynummer, Benutzername oder E-Mail-Adresse",
        "login_password": "Passwort",
        "login_button": "Anmelden",
    },
    "es": {
        "consent_title": "¿Permitir el uso de cookies de Instagram en este navegador?",
        "consent_allow": "Permitir todas las cookies",
        "consent_decline": "Rechazar cookies opcionales",
        "save_title": "¿Guardar tu información de inicio de sesión?",
        "save_yes": "Guardar información",
        "save_no": "Ahora no",
        "notif_title": "Activar notificaciones",
        "notif_body": "Entérate al instante cuando alguien te siga o indique que le gustan tus fotos.",
        "notif_yes": "Activar",
        "notif_no": "Ahora no",
        "login_user": "Teléfono, nombre de usuario o correo electrónico",
        "login_password": "Contraseña",
        "login_button": "Iniciar sesión",
    },
}

# Pop-up texts for the ``popup_buttons`` breakage: buttons renamed to what no scraper knows.
TEXTS["xx-broken"] = {**TEXTS["en"], "consent_allow": "Sounds good", "consent_decline": "Manage my choices",
                      "save_yes": "Remember me", "save_no": "Skip for today", "notif_yes": "Enable",
                      "notif_no": "Ask me another day"}

CLASS_KEYS = ("article", "link", "img", "grid", "dialog", "panel", "button", "header", "form")


@dataclass
class Tile:
    shortcode: str
    username: str
    srcset: list[tuple[str, int]]  # (url, width), smallest first
    taken_at: int | None = None  # shown as the tile's <time datetime> when set


def dialog(label: str, body: str, buttons: list[tuple[str, str | None]], cls: dict[str, str]) -> str:
    """A blocking overlay; each button closes it and may set a cookie (``name=value``)."""
    rendered = "".join(
        f'<button type="button" class="{cls["button"]}" data-close'
        + (f' data-cookie="{escape(cookie)}"' if cookie else "")
        + (" data-secondary" if i else "")
        + f">{escape(text)}</button>"
        for i, (text, cookie) in enumerate(buttons)
    )
    return (
        f'<div role="dialog" aria-modal="true" aria-label="{escape(label)}" class="{cls["dialog"]}">'
        f'<div class="{cls["panel"]}"><h2>{escape(label)}</h2>'
        + (f"<p>{escape(body)}</p>" if body else "")
        + f"{rendered}</div></div>"
    )


def consent_dialog(lang: str, cls: dict[str, str]) -> str:
    t = TEXTS[lang]
    return dialog(
        t["consent_title"], "",
        [(t["consent_allow"], "consent=all"), (t["consent_decline"], "consent=essential")], cls,
    )


def unknown_consent_dialog(cls: dict[str, str]) -> str:
    """A redesigned cookie dialog: button names no scraper list has, and a close button."""
    close = f'<button type="button" class="{cls["button"]}" data-close data-secondary aria-label="Close">×</button>'
    return dialog(
        "Cookies on this site", "We use cookies to personalise content and to keep the service safe.",
        [("Accept all and continue", "consent=all"), ("Continue with necessary cookies only", "consent=essential")],
        cls,
    ).replace("<h2>", close + "<h2>", 1)


def save_login_dialog(lang: str, cls: dict[str, str]) -> str:
    t = TEXTS[lang]
    return dialog(t["save_title"], "", [(t["save_yes"], "ss_saved=1"), (t["save_no"], None)], cls)


def notifications_dialog(lang: str, cls: dict[str, str]) -> str:
    t = TEXTS[lang]
    return dialog(t["notif_title"], t["notif_body"], [(t["notif_yes"], None), (t["notif_no"], None)], cls)


def page(title: str, body: str, cls: dict[str, str], *, dialogs: list[str] = (), config: dict[str, Any] | None = None,
         lang: str = "en", head: str = "") -> str:
    conf = json.dumps({"classes": cls, **(config or {})}).replace("</", "<\\/")
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">{head}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/site.css"></head>'
        f'<body><header class="{cls["header"]}"><a href="/">Instagram</a>'
        '<a href="/explore/tags/selfie/">#selfie</a><a href="/explore/tags/portrait/">#portrait</a></header>'
        f"<main>{body}</main>{''.join(dialogs)}"
        f'<script type="application/json" id="ss-config">{conf}</script>'
        '<script src="/static/site.js" defer></script></body></html>'
    )


def login_form(cls: dict[str, str], next_url: str, error: str | None = None) -> str:
    alert = f'<p role="alert">{escape(error)}</p>' if error else ""
    return (
        f'<form class="{cls["form"]}" method="post" action="/accounts/login/ajax/">'
        "<h1>Instagram</h1>"
        '<input name="username" autocomplete="username" aria-label="Phone number, username, or email" '
        'placeholder="Phone number, username, or email">'
        '<input name="password" type="password" autocomplete="current-password" aria-label="Password" placeholder="Password">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        f'<button type="submit" class="{cls["button"]}">Log in</button>{alert}</form>'
    )


def unlabelled_login_form(cls: dict[str, str], next_url: str) -> str:
    """The ``login_fields`` breakage: renamed inputs with no label, placeholder or aria-label."""
    return (
        f'<form class="{cls["form"]}" method="post" action="/accounts/login/ajax/">'
        '<h1>Instagram</h1><input name="f_a8x1"><input name="f_b3k9" type="password">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        f'<button type="submit" class="{cls["button"]}">Go</button></form>'
    )


def login_form_unknown(cls: dict[str, str], next_url: str) -> str:
    """Chaos ``login_variant=unknown``: Japanese labels, inputs ``name=em`` / ``name=pw``; no name,
    label or placeholder in a language the source knows."""
    return (
        f'<form class="{cls["form"]}" method="post" action="/accounts/login/ajax/">'
        "<h1>Instagram</h1>"
        '<label for="ss-j1">電話番号、ユーザーネーム、メールアドレス</label><input id="ss-j1" name="em" type="text">'
        '<label for="ss-j2">パスワード</label><input id="ss-j2" name="pw" type="password">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        f'<button type="submit" class="{cls["button"]}">ログイン</button></form>'
    )


def login_form_labels(cls: dict[str, str], next_url: str, lang: str, error: str | None = None) -> str:
    """A redesigned login form: fields named by ``<label>`` only (no ``name=username``)."""
    t = TEXTS[lang]
    alert = f'<p role="alert">{escape(error)}</p>' if error else ""
    return (
        f'<form class="{cls["form"]}" method="post" action="/accounts/login/ajax/">'
        "<h1>Instagram</h1>"
        f'<label for="ss-f1">{escape(t["login_user"])}</label><input id="ss-f1" name="email" type="text">'
        f'<label for="ss-f2">{escape(t["login_password"])}</label><input id="ss-f2" name="pass" type="password">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        f'<div role="button" tabindex="0" class="{cls["button"]}" data-submit>{escape(t["login_button"])}</div>'
        f"{alert}</form>"
    )


def login_placeholder(variant: str, lang: str, next_url: str) -> tuple[str, dict[str, Any]]:
    """A login page whose form site.js renders (the config says how)."""
    t = TEXTS[lang]
    labelled = variant == "labels"
    form = {
        "next": next_url, "labels": labelled,
        "user": t["login_user"] if labelled else "Phone number, username, or email",
        "password": t["login_password"] if labelled else "Password",
        "button": t["login_button"] if labelled else "Log in",
    }
    return '<div id="ss-login"><p>Loading…</p></div>', {"login_form": form}


def two_factor_form(cls: dict[str, str], next_url: str, error: str | None = None) -> str:
    alert = f'<p role="alert">{escape(error)}</p>' if error else ""
    return (
        f'<form class="{cls["form"]}" method="post" action="/accounts/login/two_factor/">'
        "<h1>Enter Security code</h1><p>Enter the 6-digit code we sent to your phone.</p>"
        '<input name="verificationCode" inputmode="numeric" autocomplete="one-time-code" aria-label="Security Code" '
        'placeholder="Security code">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        f'<button type="submit" class="{cls["button"]}">Confirm</button>{alert}</form>'
    )


def tile_html(tile: Tile, cls: dict[str, str]) -> str:
    srcset = ", ".join(f"{url} {w}w" for url, w in tile.srcset)
    when = "" if tile.taken_at is None else (
        f'<time datetime="{datetime.fromtimestamp(tile.taken_at, tz=timezone.utc).isoformat()}"></time>')
    return (
        f'<article class="{cls["article"]}"><a class="{cls["link"]}" href="/p/{escape(tile.shortcode)}/">'
        f'<img class="{cls["img"]}" src="{escape(tile.srcset[0][0])}" srcset="{escape(srcset)}" '
        f'sizes="(max-width: 735px) 33vw, 293px" alt="Photo by {escape(tile.username)}" loading="lazy"></a>{when}</article>'
    )


def post_body(image_url: str, username: str, caption: str, width: int, height: int, taken_at: int) -> str:
    return (
        f'<article class="post"><img src="{escape(image_url)}" alt="Photo by {escape(username)}" '
        f'width="{width}" height="{height}"><h1>{escape(username)}</h1>'
        f"<p>{escape(caption)}</p><time datetime=\"{taken_at}\"></time></article>"
    )


def tag_body(tag: str, total: int, tiles: list[Tile], cls: dict[str, str]) -> str:
    grid = "".join(tile_html(t, cls) for t in tiles)
    return (
        f"<h1>#{escape(tag)}</h1><p><span>{total}</span> posts</p>"
        f'<h2>Recent</h2><div class="{cls["grid"]}" data-grid data-count="{len(tiles)}">{grid}</div>'
        '<div id="ss-sentinel"></div><div id="ss-status" aria-live="polite"></div>'
    )
