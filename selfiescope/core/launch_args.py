"""Chromium's command line: no background traffic of its own.

With ``[browser] proxy`` every context carries the proxy, and Chromium sends the look-ups it
makes for a page (autofill field types for a login form, optimization hints, translation,
safe-browsing pings) through that context's network, so through the proxy, with the proxy's
credentials. These switches stop those services, so that the only host the proxy is asked
for is the site's.

Chromium keeps one value per switch (the last), so a second ``--disable-features`` would undo
the one Playwright passes first: the list below holds Playwright's own entries too, and a
``--disable-features`` among ``browser.extra_args`` is merged into it rather than replacing it.
"""

from __future__ import annotations

DISABLE_FEATURES_PREFIX = "--disable-features="

# Playwright's (chromiumSwitches.ts), kept because our switch replaces theirs.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding", "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch", "ImprovedCookieControls", "LazyFrameLoading", "GlobalMediaControls", "AcceptCHFrame",
    "AutoExpandDetailsElement", "CertificateTransparencyComponentUpdater", "DialMediaRouteProvider", "Translate",
)

# Google services that would reach out from a page's network context (through the proxy).
BACKGROUND_SERVICE_FEATURES = (
    "AutofillServerCommunication",  # content-autofill.googleapis.com, on every form
    "OptimizationHintsFetching", "OptimizationGuideModelDownloading", "OptimizationTargetPrediction",
    "InterestFeedContentSuggestions", "PrivacySandboxSettings4", "SafeBrowsingBetterTelemetryAcrossReports",
)

BASE_ARGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--metrics-recording-only",
)


def launch_args(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The switches a browser starts with: :data:`BASE_ARGS`, one ``--disable-features`` holding
    Playwright's, the background services' and any the user's ``extra`` name, then ``extra``'s others."""
    features = [*PLAYWRIGHT_DISABLED_FEATURES, *BACKGROUND_SERVICE_FEATURES]
    rest: list[str] = []
    for arg in extra:
        if arg.startswith(DISABLE_FEATURES_PREFIX):
            features += [f for f in arg[len(DISABLE_FEATURES_PREFIX):].split(",") if f.strip()]
        else:
            rest.append(arg)
    merged = list(dict.fromkeys(f.strip() for f in features))
    return [*BASE_ARGS, DISABLE_FEATURES_PREFIX + ",".join(merged), *rest]
