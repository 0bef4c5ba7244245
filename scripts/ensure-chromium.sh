#!/usr/bin/env bash
# Make sure a Chromium exists for Playwright: a system one, else Playwright's own
# download (needs the internet), else Debian's package when we are root.
set -u
PY=${PY:-.venv/bin/python}
if "$PY" -m selfiescope.core.browser_lookup >/dev/null 2>&1; then
    exit 0
fi
echo "No Chromium found; trying 'playwright install chromium'..." >&2
if timeout 300 "$PY" -m playwright install chromium >/dev/null 2>&1 && "$PY" -m selfiescope.core.browser_lookup >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium with apt-get..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2 || true
fi
if "$PY" -m selfiescope.core.browser_lookup >/dev/null 2>&1; then
    exit 0
fi
echo "ERROR: no Chromium. Install one (e.g. 'sudo apt-get install chromium' or" >&2
echo "'python -m playwright install chromium'), or set browser.executable in settings.toml." >&2
exit 1
