#!/usr/bin/env bash
# Install Debian's chromium for the browser test when it is missing (never a downloaded browser build).
set -u
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "could not install chromium: browser tests will be skipped" >&2
else
  echo "chromium not found and not root: browser tests will be skipped" >&2
fi
exit 0
