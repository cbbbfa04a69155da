#!/bin/sh
# ctl: the operator's front door to berth. `./ctl help` lists the commands.
set -eu

ROOT=$(cd "$(dirname "$0")" && pwd)
CONFIG_DIR=${BERTH_CONFIG_DIR:-$ROOT}
STATE_DIR=${BERTH_STATE_DIR:-$CONFIG_DIR/state}
BIN=$ROOT/target/release/berth
PID_FILE=$STATE_DIR/berth.pid
LOG_FILE=$STATE_DIR/berth.log
# Debian packages the tests drive: real clients, the reference registry, tools.
TEST_PACKAGES="skopeo docker.io docker-registry apache2-utils umoci"

die() { echo "ctl: $*" >&2; exit 1; }

usage() {
	cat <<'USAGE'
usage: ./ctl COMMAND [ARGS]

  start                 build if needed, create missing credentials, start in the background
  stop                  stop gracefully (requests in flight finish)
  restart               stop, then start
  status                running or not, pid, instances and their listeners
  logs                  follow the log
  debug                 run in the foreground with debug logging (Ctrl-C stops)
  check                 validate the configuration (berth check)
  passwd INSTANCE USER [--delete]
                        set a user's password (prompt or stdin), or remove the user
  test                  install the Debian packages the tests need, then run every test
  help                  this text

Environment: BERTH_CONFIG_DIR (default: this checkout), BERTH_STATE_DIR
(default: CONFIG_DIR/state; holds berth.pid and berth.log).
USAGE
}

need_cargo() {
	command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ] ||
		die "cargo is not installed: install Rust from your distribution or rustup, then run this again"
	PATH=$HOME/.cargo/bin:$PATH
}

build() {
	if [ ! -x "$BIN" ] || [ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" 2>/dev/null | head -n 1)" ]; then
		need_cargo
		echo "ctl: building berth (release)..."
		(cd "$ROOT" && cargo build --release --quiet) || die "the build failed (see above)"
	fi
}

pid() {
	[ -f "$PID_FILE" ] || return 1
	p=$(cat "$PID_FILE")
	[ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

# htpasswd path of an instance file: its [auth] htpasswd, else credentials/NAME.htpasswd.
htpasswd_of() {
	name=$(basename "$1" .toml)
	p=$(sed -n 's/^[[:space:]]*htpasswd[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$1" | head -n 1)
	[ -n "$p" ] || p=credentials/$name.htpasswd
	case $p in /*) echo "$p" ;; *) echo "$CONFIG_DIR/$p" ;; esac
}

ensure_credentials() {
	for f in "$CONFIG_DIR"/instances/*.toml; do
		[ -f "$f" ] || continue
		name=$(basename "$f" .toml)
		file=$(htpasswd_of "$f")
		if [ ! -s "$file" ]; then
			password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=\n')
			printf '%s\n' "$password" | "$BIN" passwd --config-dir "$CONFIG_DIR" "$name" admin >/dev/null
			echo "ctl: created user 'admin' for instance '$name' with password: $password"
			echo "     (shown once; only its bcrypt hash is stored in $file)"
		fi
	done
}

# The log of the current run: from the line recorded when it started.
current_run() {
	first=$(cat "$STATE_DIR/berth.run" 2>/dev/null || echo 1)
	tail -n "+$first" "$LOG_FILE" 2>/dev/null
}

print_endpoints() {
	current_run | sed -n '/^berth: ready$/q;/^berth: .* listening on /p' | while read -r _ who _ _ url; do
		addr=${url#http://}
		if [ "$who" = shared ]; then
			echo "  shared listener $url (routes by Host)"
		else
			echo "  $who: $url    docker login $addr"
		fi
	done
}

start() {
	if p=$(pid); then
		echo "ctl: berth is already running (pid $p)"
		return 0
	fi
	build
	ensure_credentials
	"$BIN" check --config-dir "$CONFIG_DIR" >/dev/null || exit 2
	mkdir -p "$STATE_DIR"
	touch "$LOG_FILE"
	echo $(($(wc -l <"$LOG_FILE") + 1)) >"$STATE_DIR/berth.run"
	nohup "$BIN" serve --config-dir "$CONFIG_DIR" >>"$LOG_FILE" 2>&1 </dev/null &
	p=$!
	echo "$p" >"$PID_FILE"
	i=0
	while ! current_run | grep -q '^berth: ready$'; do
		i=$((i + 1))
		if ! kill -0 "$p" 2>/dev/null || [ $i -gt 100 ]; then
			current_run | tail -n 20 >&2
			kill "$p" 2>/dev/null || true
			rm -f "$PID_FILE"
			die "berth did not start; the log is $LOG_FILE"
		fi
		sleep 0.1
	done
	echo "ctl: berth is running (pid $p); log: $LOG_FILE"
	print_endpoints
}

stop() {
	if ! p=$(pid); then
		echo "ctl: berth is not running"
		rm -f "$PID_FILE"
		return 0
	fi
	kill -TERM "$p"
	i=0
	while kill -0 "$p" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 300 ]; then
			echo "ctl: berth did not stop within 30 s; killing it" >&2
			kill -KILL "$p" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	rm -f "$PID_FILE"
	echo "ctl: berth stopped"
}

status() {
	if p=$(pid); then
		echo "berth is running (pid $p)"
		print_endpoints
		return 0
	fi
	echo "berth is not running"
	[ -x "$BIN" ] && "$BIN" check --config-dir "$CONFIG_DIR" | sed 1d
	return 3
}

install_test_packages() {
	missing=
	for cmd in skopeo:skopeo dockerd:docker.io docker-registry:docker-registry htpasswd:apache2-utils umoci:umoci; do
		command -v "${cmd%%:*}" >/dev/null 2>&1 || missing="$missing ${cmd#*:}"
	done
	[ -z "$missing" ] && return 0
	echo "ctl: installing Debian packages:$missing"
	sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case $cmd in
start) start ;;
stop) stop ;;
restart) stop && start ;;
status) status ;;
logs) [ -f "$LOG_FILE" ] || die "no log yet at $LOG_FILE (start berth first)"; exec tail -n 50 -F "$LOG_FILE" ;;
debug)
	build
	ensure_credentials
	RUST_LOG=${RUST_LOG:-debug} exec "$BIN" serve --config-dir "$CONFIG_DIR"
	;;
check) build; exec "$BIN" check --config-dir "$CONFIG_DIR" ;;
passwd)
	[ $# -ge 2 ] || die "usage: ./ctl passwd INSTANCE USER [--delete]"
	build
	exec "$BIN" passwd --config-dir "$CONFIG_DIR" "$@"
	;;
test)
	need_cargo
	install_test_packages
	cd "$ROOT" && exec cargo test --all-targets "$@"
	;;
help | -h | --help) usage ;;
*) usage >&2; exit 64 ;;
esac
