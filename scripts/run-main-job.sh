#!/usr/bin/env bash
# The main job, end to end, on embedded defaults (local libvirt, per-user image cache):
# set up the host, build pyti, check the host, validate the recipes, build the guest image, and
# run the most complete part of the task cycle that has landed. It prints what it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "host set-up (scripts/setup-host.sh)"
scripts/setup-host.sh
say "build (cargo build --bins)"
cargo build --locked --bins
pyti=target/debug/pyti
export PYTI_AGENT="$PWD/target/debug/pyti-agent"

say "pyti doctor"
"$pyti" doctor
say "pyti recipes check recipes/*.toml"
"$pyti" recipes check recipes/*.toml
say "pyti image build debian-12"
"$pyti" image build debian-12
say "pyti run six==1.16.0"
"$pyti" run six==1.16.0
