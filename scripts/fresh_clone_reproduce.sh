#!/bin/bash
# Time `nox -s reproduce` as a newcomer would: a fresh clone of COMMIT in FOLDER/repo, with HOME and
# every cache the suite writes (lgmrec's under XDG_CACHE_HOME, uv, pip, matplotlib) in new empty
# folders. Writes FOLDER/reproduce.log, ending "rc=... seconds=...", with the machine's CPU counters
# (/proc/stat's cpu line) at the start and the end, so that the log shows how busy the machine was
# and how much time the hypervisor stole. For side-by-side timings run
# two commits one after the other, alternated, on an otherwise quiet machine; scripts/ab_timings.py
# reads the logs and prints the ratio.
# Usage: scripts/fresh_clone_reproduce.sh FOLDER [COMMIT] [REPOSITORY]
set -u
folder=$(realpath -m "${1:?usage: $0 FOLDER [COMMIT] [REPOSITORY]}")
commit=${2:-HEAD}
repository=${3:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
rm -rf "$folder/repo" "$folder/home" && mkdir -p "$folder/home"
git clone -q "$repository" "$folder/repo" && git -C "$folder/repo" checkout -q "$commit" || exit 2
cd "$folder/repo"
export HOME=$folder/home XDG_CACHE_HOME=$folder/home/.cache MPLCONFIGDIR=$folder/home/mpl \
       UV_CACHE_DIR=$folder/home/uv PIP_NO_CACHE_DIR=1
log=$folder/reproduce.log
echo "commit $(git rev-parse --short HEAD) start $(date -u +%FT%TZ)" > "$log"
echo "proc-stat start $(head -1 /proc/stat)" >> "$log"
start=$(date +%s)
python3 -m pip install -q 'nox[uv]' > /dev/null 2>&1
nox -s reproduce >> "$log" 2>&1
rc=$?
echo "proc-stat end $(head -1 /proc/stat)" >> "$log"
echo "rc=$rc seconds=$(( $(date +%s) - start )) end $(date -u +%FT%TZ)" >> "$log"
