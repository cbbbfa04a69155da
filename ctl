#!/bin/sh
# ctl: the operator's front door to berth. `./ctl help` lists the commands.
set -eu

ROOT=$(cd "$(dirname "$0")" && pwd)
CONFIG_DIR=${BERTH_CONFIG_DIR:-$ROOT}
STATE_DIR=${BERTH_STATE_DIR:-$CONFIG_DIR/state}
# BERTH_BIN: use this binary instead of building target/release/berth.
BIN=${BERTH_BIN:-$ROOT/target/release/berth}
PID_FILE=$STATE_DIR/berth.pid
LOG_FILE=$STATE_DIR/berth.log
UNIT=berth.service
SYSTEMD_DIR=${BERTH_SYSTEMD_DIR:-/etc/systemd/system}
SERVICE_USER=berth
# Test tools that Debian does not ship, built or installed once and kept
# (bench/src/garage.rs and tests/suite/common/moto.rs look for them there).
TOOLS=${BERTH_TOOLS:-$HOME/.cache/berth/tools}

die() { echo "ctl: $*" >&2; exit 1; }

usage() {
	cat <<'USAGE'
usage: ./ctl COMMAND [ARGS]

  start                 build if needed, create missing credentials, start in the background
                        (through systemd once `install` has run and systemd is up)
  stop                  stop gracefully (requests in flight finish, up to the drain timeout)
  restart               stop, then start
  reload                re-read berth.toml, instances/*.toml and credentials (SIGHUP);
                        a config with errors is refused and the running one stays
  status                running or not, pid, instances, listeners and usage
  logs                  follow the log (journalctl under systemd)
  debug                 run in the foreground with debug logging (Ctrl-C stops)
  check                 validate the configuration (berth check)
  passwd INSTANCE USER [--delete]
                        set a user's password (prompt or stdin), or remove the user
  install               install the systemd unit for this checkout and a system user
                        `berth` (needs root); prints what it did
  test                  install the Debian packages and S3 servers (Garage, moto) the tests
                        need, then run every test
  help                  this text

Exit codes: 0 done, 1 failed, 2 configuration errors, 3 (status) not running,
64 usage.

Environment: BERTH_CONFIG_DIR (default: this checkout), BERTH_STATE_DIR
(default: CONFIG_DIR/state; holds berth.pid and berth.log), BERTH_BIN (use
this binary, build nothing), BERTH_SYSTEMD_DIR (default /etc/systemd/system),
BERTH_TOOLS (default ~/.cache/berth/tools; test tools from crates.io and PyPI).
USAGE
}

need_cargo() {
	command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ] ||
		die "cargo is not installed: install Rust from your distribution or rustup, then run this again"
	PATH=$HOME/.cargo/bin:$PATH
}

build() {
	[ -n "${BERTH_BIN:-}" ] && return 0
	if [ ! -x "$BIN" ] || [ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" 2>/dev/null | head -n 1)" ]; then
		need_cargo
		echo "ctl: building berth (release)..."
		(cd "$ROOT" && cargo build --release --quiet) || die "the build failed (see above)"
	fi
}

systemd_up() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
use_systemd() { [ -f "$SYSTEMD_DIR/$UNIT" ] && systemd_up; }

pid() {
	if use_systemd; then
		p=$(systemctl show -p MainPID --value "$UNIT")
		[ -n "$p" ] && [ "$p" != 0 ] && echo "$p"
		return
	fi
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
		addr=${url#*://}
		case $who in
		shared) echo "  shared listener $url (routes by Host)" ;;
		shared-tls) echo "  shared TLS listener $url (routes by SNI; docker login <hostname>)" ;;
		*) echo "  $who: $url    docker login $addr" ;;
		esac
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
	if use_systemd; then
		chown -R "$SERVICE_USER:$SERVICE_USER" "$CONFIG_DIR/credentials"
		systemctl start "$UNIT" || die "systemctl start failed: see ./ctl logs"
		echo "ctl: berth is running under systemd (pid $(pid))"
		"$BIN" check --config-dir "$CONFIG_DIR" | sed 1d
		return 0
	fi
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
	if use_systemd; then
		systemctl stop "$UNIT"
		echo "ctl: berth stopped"
		return 0
	fi
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

# What each instance holds, as the running server last measured it (read
# from the state directory; nothing walks the store).
print_usage() {
	"$BIN" usage --config-dir "$CONFIG_DIR" 2>/dev/null | sed 's/^/  /'
}

reload() {
	p=$(pid) || die "berth is not running (./ctl start)"
	"$BIN" check --config-dir "$CONFIG_DIR" >/dev/null ||
		die "the configuration has errors (above); berth keeps running the previous one"
	kill -HUP "$p"
	echo "ctl: asked berth (pid $p) to reload; ./ctl logs shows the result"
}

status() {
	if p=$(pid); then
		echo "berth is running (pid $p)"
		if use_systemd; then
			"$BIN" check --config-dir "$CONFIG_DIR" | sed 1d
		else
			print_endpoints
		fi
		print_usage
		return 0
	fi
	echo "berth is not running"
	[ -x "$BIN" ] && "$BIN" check --config-dir "$CONFIG_DIR" | sed 1d && print_usage
	return 3
}

# Storage roots of the instances, absolute.
storage_roots() {
	for f in "$CONFIG_DIR"/instances/*.toml; do
		[ -f "$f" ] || continue
		r=$(sed -n 's/^[[:space:]]*root[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$f" | head -n 1)
		[ -n "$r" ] || r=data/$(basename "$f" .toml)
		case $r in /*) echo "$r" ;; *) echo "$CONFIG_DIR/$r" ;; esac
	done
}

install() {
	[ "$(id -u)" -eq 0 ] || die "install needs root: sudo ./ctl install"
	build
	if ! id "$SERVICE_USER" >/dev/null 2>&1; then
		useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER"
		echo "ctl: created system user $SERVICE_USER"
	fi
	writable="$STATE_DIR $CONFIG_DIR/credentials $(storage_roots | tr '\n' ' ')"
	for d in $writable; do
		mkdir -p "$d"
		chown -R "$SERVICE_USER:$SERVICE_USER" "$d"
	done
	echo "ctl: $SERVICE_USER owns $writable"
	runuser -u "$SERVICE_USER" -- test -r "$CONFIG_DIR/instances" -a -x "$BIN" ||
		die "user $SERVICE_USER cannot read $CONFIG_DIR or run $BIN: put the checkout where it can (e.g. /srv/berth) and run install again"
	case $CONFIG_DIR in /home/* | /root/*) protect_home=read-only ;; *) protect_home=yes ;; esac
	mkdir -p "$SYSTEMD_DIR"
	sed -e "s#@BIN@#$BIN#g" -e "s#@CONFIG_DIR@#$CONFIG_DIR#g" \
		-e "s#@PROTECT_HOME@#$protect_home#g" -e "s#@WRITABLE@#$writable#g" \
		-e "s#@README@#$ROOT/README.md#g" \
		"$ROOT/systemd/berth.service" >"$SYSTEMD_DIR/$UNIT"
	echo "ctl: wrote $SYSTEMD_DIR/$UNIT"
	if systemd_up; then
		systemctl daemon-reload
		systemctl enable "$UNIT" >/dev/null
		echo "ctl: enabled $UNIT; ./ctl start starts it"
	else
		echo "ctl: systemd is not running here; the unit is in place for when it is"
	fi
}

install_test_packages() {
	missing=
	for cmd in skopeo:skopeo dockerd:docker.io docker-registry:docker-registry htpasswd:apache2-utils umoci:umoci systemd-analyze:systemd pebble:pebble openssl:openssl curl:curl; do
		command -v "${cmd%%:*}" >/dev/null 2>&1 || missing="$missing ${cmd#*:}"
	done
	# The PostgreSQL server's programs are not on PATH (tests/suite/common/postgres.rs).
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$missing postgresql"
	# moto goes into a venv (install_test_tools), which needs Debian's ensurepip.
	if ! have_moto && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
		missing="$missing python3-venv"
	fi
	[ -z "$missing" ] && return 0
	echo "ctl: installing Debian packages:$missing"
	sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
}

have_moto() { command -v moto_server >/dev/null 2>&1 || [ -x "$TOOLS/venv/bin/moto_server" ]; }

# The S3 servers of the tests: Garage from crates.io, moto from PyPI (in a
# venv of its own, which leaves the system's Python alone).
install_test_tools() {
	if [ ! -x "$TOOLS/bin/garage" ]; then
		echo "ctl: building Garage 2.5.0 into $TOOLS (cargo install, once: about 15 minutes on 2 cores)"
		cargo install garage --locked --version 2.5.0 --root "$TOOLS" --quiet ||
			die "building Garage failed (see above)"
	fi
	if ! have_moto; then
		echo "ctl: installing moto[server] (PyPI) into $TOOLS/venv"
		{ python3 -m venv "$TOOLS/venv" &&
			"$TOOLS/venv/bin/python3" -m pip install --quiet 'moto[server]'; } ||
			die "installing moto failed (see above)"
	fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case $cmd in
start) start ;;
stop) stop ;;
restart) stop && start ;;
status) status ;;
reload) reload ;;
install) install ;;
logs)
	use_systemd && exec journalctl -u "$UNIT" -n 50 -f
	[ -f "$LOG_FILE" ] || die "no log yet at $LOG_FILE (start berth first)"
	exec tail -n 50 -F "$LOG_FILE"
	;;
debug)
	build
	ensure_credentials
	RUST_LOG=${RUST_LOG:-debug} exec "$BIN" serve --config-dir "$CONFIG_DIR"
	;;
check) build; exec "$BIN" check --config-dir "$CONFIG_DIR" ;;
passwd)
	[ $# -ge 2 ] || die "usage: ./ctl passwd INSTANCE USER [--delete]"
	build
	"$BIN" passwd --config-dir "$CONFIG_DIR" "$@"
	file=$(htpasswd_of "$CONFIG_DIR/instances/$1.toml")
	use_systemd && chown "$SERVICE_USER:$SERVICE_USER" "$file"
	# A running berth notices within a second anyway; SIGHUP makes it now.
	if p=$(pid); then kill -HUP "$p"; fi
	;;
test)
	need_cargo
	install_test_packages
	install_test_tools
	cd "$ROOT" && exec cargo test --all-targets "$@"
	;;
help | -h | --help) usage ;;
*) usage >&2; exit 64 ;;
esac
