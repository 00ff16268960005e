#!/usr/bin/env bash
# Install Debian's headless browser for the dashboard's browser test
# (qis-gateway/tests/dashboard.rs), which starts and stops chromedriver
# itself on a free loopback port.
#
#   scripts/servers/chromium.sh install   # chromium + chromium-driver from Debian, if missing
#
# Never a browser a tool downloads by itself: Debian's packages only.
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

install() {
    if have; then
        log "present: $(chromium --version 2>/dev/null || echo chromium), $(chromedriver --version 2>/dev/null | head -1 || echo chromedriver)"
        return 0
    fi
    log "installing chromium and chromium-driver from Debian"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
    have || { log "chromium or chromedriver is still missing after apt-get install"; exit 1; }
    log "installed: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | head -1)"
}

case "${1:-}" in
    install) install ;;
    *)
        echo "usage: $0 install" >&2
        exit 2
        ;;
esac
