# Shared by the server scripts in this folder (sourced, never run on its
# own): port checks, finding a binary, waiting for a server to answer, and
# stopping exactly the PID a script started.
#
#   here="$(cd "$(dirname "$0")" && pwd)"
#   . "$here/lib.sh"
#
# Every message goes to stderr prefixed with the calling script's name.

log() { echo "$(basename "$0"): $*" >&2; }

# port_open PORT [HOST]: something accepts connections there (bash's
# /dev/tcp: no extra tools needed). HOST defaults to 127.0.0.1.
port_open() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# find_bin NAME: print the path of the executable NAME, from PATH or from
# a directory pip may install scripts to that is not yet on PATH.
find_bin() {
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
        return 0
    fi
    local d
    for d in "$HOME/.local/bin" /usr/local/bin /usr/bin /usr/sbin; do
        if [ -x "$d/$1" ]; then
            echo "$d/$1"
            return 0
        fi
    done
    return 1
}

# apt_install PACKAGE...: install Debian packages, through sudo when not root.
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# running PIDFILE: PIDFILE names a live process.
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_until SECONDS WHAT PID LOGFILE PROBE...: run PROBE every 0.1 s until it
# succeeds. Fails, showing the end of LOGFILE, when PID (if not empty) exits
# first or after SECONDS; a PID still running then is killed.
wait_until() {
    local secs="$1" what="$2" pid="$3" logfile="$4" i
    shift 4
    for ((i = 0; i < secs * 10; i++)); do
        if "$@"; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            log "$what exited during start; its log:"
            tail -n 30 "$logfile" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    log "$what did not answer within $secs s; its log:"
    tail -n 30 "$logfile" >&2 || true
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
    fi
    return 1
}

# wait_gone PID WHAT: wait up to 10 s for PID to exit after a SIGTERM, then
# send SIGKILL.
wait_gone() {
    local pid="$1" what="$2" i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$what (pid $pid) did not exit within 10 s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# stop_pidfile PIDFILE WHAT: stop exactly the PID in PIDFILE (SIGTERM, then
# SIGKILL after 10 s) and remove PIDFILE; nothing to do without the file.
stop_pidfile() {
    local pidfile="$1" what="$2" pid
    if [ ! -f "$pidfile" ]; then
        log "no $pidfile: nothing to stop"
        return 0
    fi
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait_gone "$pid" "$what"
        log "stopped $what (pid $pid)"
    fi
    rm -f "$pidfile"
}

# need_dir CMD DIR: DIR is given, else print the usage and exit 2.
need_dir() {
    if [ -z "${2:-}" ]; then
        echo "usage: $0 $1 DIR" >&2
        exit 2
    fi
}

# out_dir DIR: create DIR (and its parents) and print its absolute path, for
# the scripts that write their results there.
out_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}
