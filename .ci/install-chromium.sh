#!/usr/bin/env bash
# Install Debian's chromium for the browser test (tests/test_explore.py), if it is missing.
# Never fails the CI run: without chromium that test is skipped with its reason.
set -u

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "WARNING: not root and no sudo; cannot install chromium; the browser test will be skipped" >&2
        exit 0
    fi
fi

if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; then
    echo "installed chromium: $(command -v chromium || echo '(not on PATH)')"
else
    echo "WARNING: could not install chromium (apt-get failed); the browser test will be skipped" >&2
fi
exit 0
