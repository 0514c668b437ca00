#!/bin/sh
# install.sh — install sandkeep-agent into a sandbox image (or any machine).
#
#   install.sh [--prefix DIR] [--boot] SOURCE
#
# SOURCE is a path to a built sandkeep-agent or an http(s) URL to download it
# from. The binary is installed as DIR/sandkeep-agent (default
# /usr/local/bin) and checked to run.
#
# --boot (run it in the image build) also installs DIR/sandkeep-entrypoint:
# use it as the image's entrypoint, in front of the image's own command:
#
#   ENTRYPOINT ["/usr/local/bin/sandkeep-entrypoint"]
#   CMD ["sleep", "infinity"]          # or whatever the image runs
#
# On boot the entrypoint starts `sandkeep-agent run` (configured by the
# SANDKEEP_* environment: SANDKEEP_COORDINATOR, SANDKEEP_TOKEN,
# SANDKEEP_WORKSPACE …), waits until the workspace is restored, then runs the
# image's command. If the workspace is not restored (token refused, agent
# exited, SANDKEEP_RESTORE_TIMEOUT passed) it exits 69 naming the cause and
# never starts the command, unless SANDKEEP_ALLOW_UNRESTORED=1. On SIGTERM it
# stops the command, then lets the agent flush every change before exiting.
# It also raises the inotify limits when it can (as root, with a writable
# /proc/sys).
set -eu

prefix=/usr/local/bin
boot=0
src=
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --boot) boot=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$src" ] || { echo "install.sh: one SOURCE only" >&2; exit 2; }; src=$1; shift ;;
  esac
done
[ -n "$src" ] || { echo "usage: install.sh [--prefix DIR] [--boot] PATH-OR-URL" >&2; exit 2; }

mkdir -p "$prefix"
tmp=$(mktemp "$prefix/.sandkeep-agent.XXXXXX")
trap 'rm -f "$tmp"' EXIT INT TERM
case "$src" in
  http://*|https://*)
    if command -v curl >/dev/null 2>&1; then
      curl -fsSL --retry 3 -o "$tmp" "$src"
    elif command -v wget >/dev/null 2>&1; then
      wget -q -O "$tmp" "$src"
    else
      echo "install.sh: need curl or wget to download $src" >&2; exit 1
    fi ;;
  *)
    [ -f "$src" ] || { echo "install.sh: $src: no such file" >&2; exit 1; }
    cp "$src" "$tmp" ;;
esac
chmod 0755 "$tmp"
if ! out=$("$tmp" --version 2>&1); then
  echo "install.sh: the downloaded file does not run here: $out" >&2
  exit 1
fi
case "$out" in
  *sandkeep-agent*) ;;
  *) echo "install.sh: $src is not sandkeep-agent (it says: $out)" >&2; exit 1 ;;
esac
mv -f "$tmp" "$prefix/sandkeep-agent"
trap - EXIT INT TERM
echo "installed $prefix/sandkeep-agent ($out)"

[ "$boot" = 1 ] || exit 0

cat > "$prefix/sandkeep-entrypoint" <<'ENTRY'
#!/bin/sh
# sandkeep-entrypoint — start sandkeep-agent, wait for the workspace restore,
# then run the image's command; on SIGTERM stop the command, then let the
# agent flush. Installed by sandkeep's install.sh --boot.
agent=$(dirname "$0")/sandkeep-agent
ws=${SANDKEEP_WORKSPACE:-/workspace}
mkdir -p "$ws"
# More watches for big workspaces, when allowed (root, writable /proc/sys).
for kv in max_user_watches=1048576 max_user_instances=1024 max_queued_events=65536; do
  f=/proc/sys/fs/inotify/${kv%%=*}
  if [ -w "$f" ] && [ "$(cat "$f")" -lt "${kv#*=}" ]; then echo "${kv#*=}" > "$f" 2>/dev/null || true; fi
done
"$agent" run --workspace "$ws" &
agent_pid=$!
# Wait (bounded by SANDKEEP_RESTORE_TIMEOUT, default 600 s) for the restore.
# The image's command never starts on a workspace that was not restored:
# its writes would look like the user's new workspace. Only
# SANDKEEP_ALLOW_UNRESTORED=1 starts it anyway.
i=0; limit=${SANDKEEP_RESTORE_TIMEOUT:-600}; why=
while :; do
  st=$("$agent" status --json 2>/dev/null)
  case "$st" in
    *'"state": "idle"'*|*'"state": "syncing"'*) break ;;
    *'"state": "token_refused"'*) why="the coordinator refused the sandbox token (SANDKEEP_TOKEN): revoked, expired, or its project was deleted"; break ;;
  esac
  if ! kill -0 "$agent_pid" 2>/dev/null; then
    wait "$agent_pid"; rc=$?
    why="sandkeep-agent exited (status $rc) before the workspace was restored; its error is above"
    agent_pid=; break
  fi
  i=$((i+1))
  if [ "$i" -gt $((limit*5)) ]; then
    err=$(printf '%s' "$st" | sed -n 's/.*"last_error": "\(.*\)",*$/\1/p' | head -1)
    why="the workspace was not restored within ${limit}s (SANDKEEP_RESTORE_TIMEOUT); coordinator ${SANDKEEP_COORDINATOR:-127.0.0.1:7420}${err:+: $err}"
    break
  fi
  sleep 0.2
done
if [ -n "$why" ]; then
  if [ "${SANDKEEP_ALLOW_UNRESTORED:-0}" != 1 ]; then
    echo "sandkeep-entrypoint: $why; not starting the command (set SANDKEEP_ALLOW_UNRESTORED=1 to start it on an unrestored workspace)" >&2
    [ -n "$agent_pid" ] && { kill -TERM "$agent_pid" 2>/dev/null; wait "$agent_pid" 2>/dev/null; }
    exit 69
  fi
  echo "sandkeep-entrypoint: $why; starting the command on an UNRESTORED workspace because SANDKEEP_ALLOW_UNRESTORED=1" >&2
fi
child=
stop() {
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
  [ -n "$agent_pid" ] || exit 0
  kill -TERM "$agent_pid" 2>/dev/null
  wait "$agent_pid"; code=$?
  exit $code
}
trap stop TERM INT
if [ $# -gt 0 ]; then
  "$@" &
  child=$!
  wait "$child"; rc=$?
  child=
  # The command ended on its own: flush, then exit with its status.
  [ -n "$agent_pid" ] && { kill -TERM "$agent_pid" 2>/dev/null; wait "$agent_pid"; }
  exit $rc
fi
[ -n "$agent_pid" ] && wait "$agent_pid"
ENTRY
chmod 0755 "$prefix/sandkeep-entrypoint"
echo "installed $prefix/sandkeep-entrypoint (set it as the image ENTRYPOINT)"
