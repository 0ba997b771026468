#!/usr/bin/env bash
# Installs lake (storage node) and lake-collector (every node) on this machine, or into
# another root directory (an image, a chroot, a test). Idempotent: what is in place and
# identical is left alone, existing configuration and secrets are never overwritten, so
# running it again after a rebuild only replaces the binaries.
#
#   deploy/install.sh                      storage node: lake + lake-collector
#   deploy/install.sh --role node --lake-url http://100.101.102.103:7470
#                                          any other node: lake-collector only
#   deploy/install.sh --dry-run            print what would be done, change nothing
#
# What it does, in order:
#   1. system users `lake` (storage) and `lake-collector`, no login, no home created;
#   2. binaries into <prefix>/bin (0755) and libduckdb.so into <prefix>/lib (0644) — the
#      binaries find it through their rpath $ORIGIN/../lib;
#   3. /etc/lake/{lake,collector}.toml skeletons (0640, group of the program's user) and
#      /etc/lake/{lake,collector}.env for secrets (0600 root) when missing; on a storage
#      node, a fresh ingest token for this node from `lake token add` (the lake keeps its
#      hash in /var/lib/lake/tokens.toml, the collector the token in collector.env).
#      Existing env files are tightened to 0600;
#   4. the systemd units (deploy/systemd/, ExecStart paths rewritten for --prefix) into
#      /etc/systemd/system (0644), plus a drop-in giving the collector the `caddy` group
#      when that group exists;
#   5. `systemctl enable` of the units — when systemd runs here (or offline into --root);
#      otherwise it says so. It never starts or restarts anything.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

usage() {
  cat <<EOF
usage: $0 [options]
  --role storage|node   storage: lake + lake-collector (default); node: lake-collector only
  --prefix DIR          where bin/ and lib/ go (default /opt/lake)
  --root DIR            install into DIR instead of / (users go into DIR/etc/passwd when it
                        exists; units are enabled offline with systemctl --root)
  --bin-dir DIR         directory holding the built lake and lake-collector
                        (default: $repo/target/release)
  --lib FILE            libduckdb.so to install (default: $repo/.duckdb/lib/libduckdb.so)
  --node NAME           this node's name (default: the hostname, made valid)
  --lake-url URL        the lake's ingest URL for the collector (default http://127.0.0.1:7470)
  --no-enable           install the units but do not enable them
  --dry-run             print what would be done and change nothing
  -h, --help            this help
EOF
}

role=storage
prefix=/opt/lake
root=/
bin_dir="$repo/target/release"
lib="$repo/.duckdb/lib/libduckdb.so"
node=""
lake_url="http://127.0.0.1:7470"
enable=true
dry_run=false

while [ $# -gt 0 ]; do
  case "$1" in
    --role) role="${2:?--role needs a value}"; shift 2 ;;
    --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
    --root) root="${2:?--root needs a value}"; shift 2 ;;
    --bin-dir) bin_dir="${2:?--bin-dir needs a value}"; shift 2 ;;
    --lib) lib="${2:?--lib needs a value}"; shift 2 ;;
    --node) node="${2:?--node needs a value}"; shift 2 ;;
    --lake-url) lake_url="${2:?--lake-url needs a value}"; shift 2 ;;
    --no-enable) enable=false; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "install: $*" >&2; exit 2; }
say() { echo "install: $*"; }
# Runs a command, or prints it under --dry-run.
run() {
  if $dry_run; then echo "would run: $*"; else "$@"; fi
}

case "$role" in storage|node) ;; *) die "--role must be storage or node, not $role" ;; esac
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path: $prefix" ;; esac
case "$lake_url" in http://?*|https://?*) ;; *) die "--lake-url must be an http(s) URL: $lake_url" ;; esac
root=$(cd "$root" 2>/dev/null && pwd) || die "--root $root is not a directory"
R="${root%/}"   # prefix of every path written: "" for /
if ! $dry_run && [ "$(id -u)" != 0 ]; then
  die "run as root (it creates users and root-owned files), or with --dry-run"
fi

# --- what to install ------------------------------------------------------------------
programs=(lake-collector)
[ "$role" = storage ] && programs=(lake lake-collector)
for p in "${programs[@]}"; do
  [ -x "$bin_dir/$p" ] || die "$bin_dir/$p missing: build it (cargo build --release --bin lake --bin lake-collector) or pass --bin-dir"
done
if [ "$role" = storage ]; then
  [ -f "$lib" ] || die "$lib missing: run scripts/setup (it fetches libduckdb), or pass --lib"
  if command -v readelf >/dev/null && ! readelf -d "$bin_dir/lake" | grep -q 'ORIGIN/../lib'; then
    die "$bin_dir/lake has no rpath \$ORIGIN/../lib; it would not find $prefix/lib/libduckdb.so"
  fi
fi

# Node name: as the collector makes it from the hostname ([A-Za-z0-9._-], no leading dot).
if [ -z "$node" ]; then
  node=$(uname -n | tr -c 'A-Za-z0-9._\n-' '-' | sed 's/^\.*//' | cut -c1-64)
  [ -n "$node" ] || node=localhost
fi
[[ "$node" =~ ^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$ ]] || die "--node $node: use 1-64 of [A-Za-z0-9._-], not starting with a dot"

# --- users ----------------------------------------------------------------------------
# With --root, users are added to DIR/etc/passwd (useradd --prefix) when that file exists;
# otherwise the files stay owned by root and this says so.
users_here=true
if [ -n "$R" ] && [ ! -f "$R/etc/passwd" ]; then
  users_here=false
  say "no $R/etc/passwd: users not created, files left owned by root"
fi
user_exists() {
  if [ -n "$R" ]; then grep -q "^$1:" "$R/etc/passwd" 2>/dev/null; else getent passwd "$1" >/dev/null; fi
}
group_exists() {
  if [ -n "$R" ]; then grep -q "^$1:" "$R/etc/group" 2>/dev/null; else getent group "$1" >/dev/null; fi
}
# The numeric id of a user's group in the target root (chown must not use this host's names).
gid_of() {
  if [ -n "$R" ]; then awk -F: -v g="$1" '$1 == g { print $3 }' "$R/etc/group"; else getent group "$1" | cut -d: -f3; fi
}
ensure_user() { # name home comment
  if ! $users_here; then return; fi
  if user_exists "$1"; then say "user $1 exists"; return; fi
  local args=(--system --user-group --home-dir "$2" --no-create-home --shell /usr/sbin/nologin --comment "$3")
  [ -n "$R" ] && args=(--prefix "$R" "${args[@]}")
  run useradd "${args[@]}" "$1"
  say "user $1 created"
}
[ "$role" = storage ] && ensure_user lake /var/lib/lake "lake telemetry lake"
ensure_user lake-collector /var/lib/lake-collector "lake-collector"

# chown to root and the group of `user`, by number; a no-op when users are not managed.
own() { # path group
  local gid=0
  if $users_here && [ -n "${2:-}" ]; then
    gid=$(gid_of "$2")
    if [ -z "$gid" ]; then
      $dry_run && gid="<$2>" || die "group $2 not found"
    fi
  fi
  run chown "0:$gid" "$1"
}

# --- files ----------------------------------------------------------------------------
ensure_dir() { # path mode
  if [ -d "$1" ]; then return; fi
  run install -d -m "$2" "$1"
}

# Puts `src` at `dst` with `mode`, atomically (a temp file renamed over it, so a running
# program keeps its old binary), unless it is already there and identical.
put() { # src dst mode [group]
  local src=$1 dst=$2 mode=$3 group=${4:-}
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    if [ "$(stat -c %a "$dst")" != "${mode#0}" ]; then run chmod "$mode" "$dst"; fi
    say "unchanged $dst"
    return
  fi
  local verb=installed
  [ -e "$dst" ] && verb=updated
  run install -m "$mode" "$src" "$dst.new"
  own "$dst.new" "$group"
  run mv -f "$dst.new" "$dst"
  say "$verb $dst"
}

# Writes `text` to `dst` only when it does not exist yet (configuration and secrets are the
# operator's once written).
put_new() { # dst mode group text
  local dst=$1 mode=$2 group=$3 text=$4
  if [ -e "$dst" ]; then say "kept $dst (exists)"; return; fi
  if $dry_run; then echo "would write: $dst (mode $mode)"; return; fi
  local tmp="$dst.new"
  (umask 077 && printf '%s' "$text" >"$tmp")
  chmod "$mode" "$tmp"
  own "$tmp" "$group"
  mv -f "$tmp" "$dst"
  say "wrote $dst"
}

# A secrets file must stay 0600 root: tighten one an operator loosened.
tighten() { # path
  [ -e "$1" ] || return 0
  if [ "$(stat -c %a "$1")" != 600 ] || [ "$(stat -c %u "$1")" != 0 ]; then
    run chmod 600 "$1"
    run chown 0:0 "$1"
    say "tightened $1 to mode 600, owner root"
  fi
}

ensure_dir "$R$prefix" 755
ensure_dir "$R$prefix/bin" 755
for p in "${programs[@]}"; do
  put "$bin_dir/$p" "$R$prefix/bin/$p" 0755
done
if [ "$role" = storage ]; then
  ensure_dir "$R$prefix/lib" 755
  put "$lib" "$R$prefix/lib/libduckdb.so" 0644
fi
[ -f "$repo/README.md" ] && put "$repo/README.md" "$R$prefix/README.md" 0644

# --- configuration and secrets -------------------------------------------------------
ensure_dir "$R/etc/lake" 755

if [ "$role" = storage ]; then
  # The data directory, owned by the lake (systemd's StateDirectory= would make it at the
  # first start; the tokens file lives in it already).
  if [ ! -d "$R/var/lib/lake" ]; then
    ensure_dir "$R/var/lib/lake" 750
    if $users_here; then
      lake_uid=$(if [ -n "$R" ]; then awk -F: '$1 == "lake" { print $3 }' "$R/etc/passwd"; else id -u lake 2>/dev/null; fi || true)
      if [ -n "$lake_uid" ]; then run chown "$lake_uid:$(gid_of lake)" "$R/var/lib/lake"; fi
    fi
  fi
  put_new "$R/etc/lake/lake.toml" 0640 lake "# lake.toml — written by deploy/install.sh; every key: $prefix/README.md and
# lake/examples/lake.toml in the repository. Check with:
#   $prefix/bin/lake check-config --config /etc/lake/lake.toml
version = 1
data_dir = \"/var/lib/lake\"
# Loopback only. To take data from other nodes, set the node's Tailscale address
# (tailscale ip -4), e.g. listen = \"100.101.102.103:7470\".
listen = \"127.0.0.1:7470\"

# One entry per node that ships data. Tokens: $prefix/bin/lake token add --role ingest
# --node NAME (list, revoke): kept hashed in /var/lib/lake/tokens.toml, no restart needed.
[[nodes]]
name = \"$node\"

# So that something outside this machine hears when the lake stops or cannot watch:
# a healthchecks.io check (or an Uptime Kuma push monitor, style = \"uptime_kuma\"),
# pinged after every alert round (README, \"The watcher is watched\").
# [heartbeat]
# url = \"https://hc-ping.com/<uuid>\"
"
  put_new "$R/etc/lake/lake.env" 0600 "" "# Secrets of lake serve (mode 600, owner root; systemd reads it before dropping privileges):
# archive credentials (LAKE_ARCHIVE_ACCESS_KEY_ID, ...), *_env tokens of lake.toml.
"
  tighten "$R/etc/lake/lake.env"
fi

# The collector's token. On a storage node a fresh one for this node, unless collector.env
# exists (the lake keeps only its hash: a lost collector.env means a new token).
collector_token="# LAKE_TOKEN=<this node's token: on the storage node, lake token add --role ingest --node $node>"
if [ "$role" = storage ] && [ ! -e "$R/etc/lake/collector.env" ]; then
  tokens_file="$R/var/lib/lake/tokens.toml"
  if $dry_run; then
    echo "would run: $R$prefix/bin/lake token add --role ingest --node $node --file $tokens_file"
  else
    token=$("$R$prefix/bin/lake" token add --role ingest --node "$node" --comment "deploy/install.sh" --file "$tokens_file" 2>/dev/null) \
      || die "lake token add failed: run $R$prefix/bin/lake token add --role ingest --node $node --file $tokens_file to see why"
    collector_token="LAKE_TOKEN=$token"
    say "added an ingest token for $node to $tokens_file (lake token list shows it; revoke a replaced one there)"
  fi
fi
put_new "$R/etc/lake/collector.toml" 0640 lake-collector "# collector.toml — written by deploy/install.sh; every key: collector/examples/collector.toml
# in the repository. Check with:
#   $prefix/bin/lake-collector --config /etc/lake/collector.toml --check
version = 1
node = \"$node\"
data_dir = \"/var/lib/lake-collector\"

[lake]
url = \"$lake_url\"
# The token comes from LAKE_TOKEN in /etc/lake/collector.env.

[journald]
enabled = true

# Caddy's JSON access logs (the unit lets the collector read /var/log/caddy):
# [caddy]
# enabled = true
"
put_new "$R/etc/lake/collector.env" 0600 "" "# Secrets of lake-collector (mode 600, owner root; systemd reads it before dropping privileges).
$collector_token
"
tighten "$R/etc/lake/collector.env"

# --- systemd units ---------------------------------------------------------------------
units=(lake-collector.service)
[ "$role" = storage ] && units=(lake.service lake-collector.service)
ensure_dir "$R/etc/systemd/system" 755
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
for u in "${units[@]}"; do
  sed "s|/opt/lake/|$prefix/|g" "$here/systemd/$u" >"$tmpdir/$u"
  put "$tmpdir/$u" "$R/etc/systemd/system/$u" 0644
done
if group_exists caddy; then
  ensure_dir "$R/etc/systemd/system/lake-collector.service.d" 755
  printf '%s\n' "# Written by deploy/install.sh: the caddy group exists on this machine, so the collector" \
    "# may read Caddy's logs (/var/log/caddy, bound read-only by the unit)." \
    "[Service]" "SupplementaryGroups=caddy" >"$tmpdir/caddy.conf"
  put "$tmpdir/caddy.conf" "$R/etc/systemd/system/lake-collector.service.d/caddy.conf" 0644
fi

if ! $enable; then
  say "units installed, not enabled (--no-enable)"
elif [ -n "$R" ]; then
  if command -v systemctl >/dev/null; then
    run systemctl --root="$R" --quiet enable "${units[@]}"
    say "enabled ${units[*]} in $R (offline)"
  else
    say "systemctl not found: enable ${units[*]} on the target system"
  fi
elif [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
  run systemctl --quiet enable "${units[@]}"
  say "enabled ${units[*]}; start them with: systemctl start ${units[*]}"
else
  say "systemd is not running on this machine: units installed but not enabled"
  say "on a systemd machine: systemctl daemon-reload && systemctl enable --now ${units[*]}"
fi

if [ "$role" = storage ]; then
  say "next: edit /etc/lake/lake.toml (listen, one [[nodes]] per node), then check it:"
  say "  $prefix/bin/lake check-config --config /etc/lake/lake.toml"
  say "tokens of the other nodes and of Grafana: $prefix/bin/lake token add --role ingest --node NAME | --role read"
else
  say "next: put this node's token in /etc/lake/collector.env, then check:"
  say "  $prefix/bin/lake-collector --config /etc/lake/collector.toml --check"
fi
