#!/usr/bin/env bash
# Idempotent host set-up for pyti on Debian 12 (root, no systemd needed).
#
# Installs what is missing (libvirt, QEMU, libguestfs, nbdkit, supermin, a kernel for the
# guest image, PostgreSQL for the tests) and starts the daemons that are not running.
# Safe to run again: it only installs what is absent and only starts what is stopped.
#
#   scripts/setup-host.sh            # everything the main job needs
#   scripts/setup-host.sh --tests    # plus a running PostgreSQL for the test-suite
set -euo pipefail

want_postgres=0
for arg in "$@"; do
  case "$arg" in
    --tests) want_postgres=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup-host: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1msetup-host:\033[0m %s\n' "$*" >&2; }
SUDO=""
as_postgres() { runuser -u postgres -- "$@"; }
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { log "run as root or install sudo"; exit 1; }
  SUDO="sudo"
  as_postgres() { sudo -u postgres "$@"; }
fi
export DEBIAN_FRONTEND=noninteractive

# The host stack, plus what the shipped recipes' guests are built from (supermin copies the host's
# installed packages into the image): python3 with venv, pip, setuptools, wheel, procps, certificates.
packages=(libvirt-daemon-system libvirt-clients libvirt-dev qemu-system-x86 qemu-utils
          libguestfs-dev libguestfs-tools nbdkit supermin e2fsprogs linux-image-amd64 pkg-config gcc
          python3 python3-venv python3-pip python3-setuptools python3-wheel procps ca-certificates)
[ "$want_postgres" = 1 ] && packages+=(postgresql)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# qemu-system-x86 7.2 needs the qemu-utils of the same version; some images ship a newer
# qemu-utils from backports that blocks it, so pin both to the qemu-system-x86 candidate.
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  pins=()
  if [ -n "$qemu_version" ] && [ "$qemu_version" != "(none)" ]; then
    installed_utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ "$installed_utils" != "$qemu_version" ]; then
      pins=(--allow-downgrades "qemu-utils=$qemu_version" "qemu-block-extra=$qemu_version")
    fi
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" "${pins[@]}" >/dev/null
else
  log "all packages present"
fi

# The kernel supermin and libguestfs use must be readable by the user building images.
for k in /boot/vmlinuz-*; do [ -r "$k" ] || $SUDO chmod 0644 "$k"; done

start_daemon() { # name, check-path, command...
  local name=$1 sock=$2; shift 2
  if [ -S "$sock" ] && pgrep -x "$name" >/dev/null; then
    log "$name already running"
  else
    log "starting $name"
    $SUDO "$@"
    for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.1; done
    [ -S "$sock" ] || { log "$name did not create $sock"; exit 1; }
  fi
}
# Without virtlogd no domain starts ("Failed to connect socket to '/run/libvirt/virtlogd-sock'").
start_daemon virtlogd /run/libvirt/virtlogd-sock virtlogd -d
start_daemon libvirtd /run/libvirt/libvirt-sock libvirtd -d

if [ "$want_postgres" = 1 ]; then
  cluster=$(pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1" "$2}')
  if [ -z "$cluster" ]; then
    log "creating a PostgreSQL cluster"
    $SUDO pg_createcluster 15 main >/dev/null
    cluster="15 main"
  fi
  # shellcheck disable=SC2086
  if ! pg_lsclusters --no-header | awk 'NR==1 {print $4}' | grep -q online; then
    log "starting PostgreSQL $cluster"
    $SUDO pg_ctlcluster $cluster start
  else
    log "PostgreSQL $cluster already running"
  fi
  # A throw-away role and database for the tests (password auth over TCP on loopback).
  as_postgres psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname='pyti'" | grep -q 1 ||
    as_postgres psql -qc "CREATE ROLE pyti LOGIN SUPERUSER PASSWORD 'pyti'"
  as_postgres psql -qtAc "SELECT 1 FROM pg_database WHERE datname='pyti_test'" | grep -q 1 ||
    as_postgres createdb -O pyti pyti_test
fi
log "host ready"
