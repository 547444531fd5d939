#!/usr/bin/env bash
# Run by `make test`: Debian's chromium for the dashboard's browser tests (Playwright drives
# it; no browser is downloaded), installed when missing.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
