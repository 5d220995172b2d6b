#!/usr/bin/env bash
# Make sure Debian's Chromium and its WebDriver (chromium, chromium-driver) are installed; the tests
# of alexnet serve's page drive them through Selenium. Nothing else may download a browser.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-browser: chromium and chromedriver are missing and apt-get is not available here;" \
       "the browser test of alexnet serve's page will be skipped" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-browser: chromium and chromedriver are missing; install them as root:" \
       "sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2
  exit 0
fi
echo "ensure-browser: installing Debian's chromium and chromium-driver" >&2
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium chromium-driver >/dev/null; }; then
  echo "ensure-browser: apt-get could not install chromium and chromium-driver;" \
       "the browser test of alexnet serve's page will be skipped" >&2
fi
