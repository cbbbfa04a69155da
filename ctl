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
  restart               check the configuration, then stop and start (a config with errors
                        is refused and the running berth stays)
  reload                re-read berth.toml, instances/*.toml and credentials (SIGHUP),
                        creating a user admin for new instances as start does;
                        a config with errors is refused and the running one stays
  status                running or not, pid, instances, listeners and usage
  logs                  follow the log (journalctl under systemd)
  debug                 run in the foreground with debug logging (Ctrl-C stops)
  check                 validate the configuration (berth check)
  passwd INSTANCE USER [--delete] [--allow-short]
                        set a user's password (prompt or stdin; 12 characters at least
                        unless --allow-short), or remove the user
  gc [--instance NAME] [--dry-run]
                        run retention and garbage collection once (berth gc)
  fsck [--instance NAME] [--repair]
                        verify (and repair) the storage (berth fsck)
  ca-path               print the local CA certificate of self-signed instances
  import-registry2 --name NAME [--config config.yml] [--htpasswd FILE]
                        write instances/NAME.toml from a registry:2 configuration and its
                        REGISTRY_* environment; prints what does not carry over
  install               install the systemd unit for this checkout and a system user
                        `berth` (needs root); prints what it did. Without systemd
                        running, ./ctl then runs berth as that user (as root) or refuses
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
installed() { [ -f "$SYSTEMD_DIR/$UNIT" ]; }
use_systemd() { installed && systemd_up; }

# After `install`, what berth writes must belong to the user the unit runs it
# as, systemd or not. Sets AS_SERVICE to the prefix that runs a berth command
# as that user (empty when not installed, or already that user); as root it
# switches with setpriv, keeping the right to bind ports below 1024 as the
# unit does; any other user is refused.
service_prefix() {
	AS_SERVICE=
	installed || return 0
	user=$(sed -n 's/^User=//p' "$SYSTEMD_DIR/$UNIT" | head -n 1)
	[ -n "$user" ] || user=$SERVICE_USER
	[ "$(id -un)" = "$user" ] && return 0
	[ "$(id -u)" -eq 0 ] ||
		die "berth is installed to run as user $user ($SYSTEMD_DIR/$UNIT); run ./ctl $cmd as root (berth then runs as $user) or as $user, so that what berth writes stays $user's"
	id "$user" >/dev/null 2>&1 || die "user $user of $SYSTEMD_DIR/$UNIT does not exist: run ./ctl install again"
	AS_SERVICE="setpriv --reuid=$user --regid=$(id -g "$user") --init-groups --inh-caps=+net_bind_service --ambient-caps=+net_bind_service --"
	SERVICE_OWNER=$user:$(id -g "$user")
}

# Hands files the service reads (htpasswd files, ctl's own state files) to
# the service user when ./ctl runs as root after install.
give_to_service() {
	[ -n "${SERVICE_OWNER:-}" ] || return 0
	for f in "$@"; do [ -e "$f" ] && chown "$SERVICE_OWNER" "$f"; done
	return 0
}

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

# What the service reads and others may not: every file in credentials/ but
# the committed README.md and .gitignore, and each instance's htpasswd file
# wherever it is. One path a line.
service_secrets() {
	{
		for f in "$CONFIG_DIR"/credentials/* "$CONFIG_DIR"/credentials/.[!.]*; do
			case ${f##*/} in README.md | .gitignore) continue ;; esac
			[ -f "$f" ] && echo "$f"
		done
		for f in "$CONFIG_DIR"/instances/*.toml; do
			[ -f "$f" ] && htpasswd_of "$f"
		done
	} | sort -u
}

ensure_credentials() {
	for f in "$CONFIG_DIR"/instances/*.toml; do
		[ -f "$f" ] || continue
		name=$(basename "$f" .toml)
		file=$(htpasswd_of "$f")
		if [ ! -s "$file" ]; then
			password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=\n')
			printf '%s\n' "$password" | "$BIN" passwd --config-dir "$CONFIG_DIR" "$name" admin >/dev/null
			give_to_service "$file"
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

# Where each instance answers: the last `berth: instances:` block berth
# printed (at start, and after each reload), without its `berth: ` prefixes.
print_endpoints() {
	current_run | awk '
		/^berth: instances:$/ { out = ""; on = 1; next }
		/^berth:   / { if (on) out = out substr($0, 8) "\n"; next }
		/^berth: / { on = 0 }
		END { printf "%s", out }'
}

# The configuration's errors, or nothing: what start, restart and reload
# check before they touch the running berth.
check_config() {
	$AS_SERVICE "$BIN" check --config-dir "$CONFIG_DIR" >/dev/null
}

# One start at a time: the pid file is locked (flock) from before the
# credentials are made until berth is up, so a second start waits for the
# first and then finds berth running. The file is emptied, never removed,
# while berth is stopped, so that every start locks the same file.
lock_pid_file() {
	mkdir -p "$STATE_DIR"
	exec 9>>"$PID_FILE"
	if ! flock -n 9; then
		echo "ctl: another ./ctl start is under way; waiting for it"
		flock 9
	fi
}

start() {
	service_prefix
	lock_pid_file
	if p=$(pid); then
		echo "ctl: berth is already running (pid $p)"
		return 0
	fi
	build
	ensure_credentials
	service_secrets | while read -r f; do give_to_service "$f"; done
	check_config || exit 2
	if use_systemd; then
		systemctl start "$UNIT" || die "systemctl start failed: see ./ctl logs"
		echo "ctl: berth is running under systemd (pid $(pid))"
		$AS_SERVICE "$BIN" check --config-dir "$CONFIG_DIR" | sed 1d
		return 0
	fi
	touch "$LOG_FILE"
	echo $(($(wc -l <"$LOG_FILE") + 1)) >"$STATE_DIR/berth.run"
	give_to_service "$STATE_DIR" "$LOG_FILE" "$STATE_DIR/berth.run" "$PID_FILE"
	# 9>&-: the lock is ctl's, not berth's.
	# shellcheck disable=SC2086 # AS_SERVICE is a command prefix, split on purpose
	nohup $AS_SERVICE "$BIN" serve --config-dir "$CONFIG_DIR" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
	p=$!
	echo "$p" >"$PID_FILE"
	i=0
	while ! current_run | grep -q '^berth: ready$'; do
		i=$((i + 1))
		if ! kill -0 "$p" 2>/dev/null || [ $i -gt 100 ]; then
			current_run | tail -n 20 >&2
			kill "$p" 2>/dev/null || true
			: >"$PID_FILE"
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
		[ ! -s "$PID_FILE" ] || : >"$PID_FILE"
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
	: >"$PID_FILE"
	echo "ctl: berth stopped"
}

# What each instance holds, as the running server last measured it (read
# from the state directory; nothing walks the store).
print_usage() {
	"$BIN" usage --config-dir "$CONFIG_DIR" 2>/dev/null | sed 's/^/  /'
}

reload() {
	p=$(pid) || die "berth is not running (./ctl start)"
	service_prefix
	ensure_credentials
	check_config ||
		die "the configuration has errors (above); berth keeps running the previous one"
	kill -HUP "$p"
	echo "ctl: asked berth (pid $p) to reload; ./ctl logs shows the result"
}

# Stops berth only once the new configuration checks: a broken one leaves
# the running berth alone (exit 2).
restart() {
	service_prefix
	build
	ensure_credentials
	if ! check_config; then
		if p=$(pid); then
			echo "ctl: the configuration has errors (above); berth keeps running (pid $p) on the previous one" >&2
		else
			echo "ctl: the configuration has errors (above); berth is not running" >&2
		fi
		exit 2
	fi
	stop
	start
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
		# Another install at the same moment may create it first.
		useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER" ||
			id "$SERVICE_USER" >/dev/null 2>&1 || die "cannot create the system user $SERVICE_USER"
		echo "ctl: created system user $SERVICE_USER"
	fi
	# What the service writes is its own; what it only reads (the
	# credentials) is handed over file by file, leaving the committed
	# credentials/README.md and .gitignore alone.
	writable="$STATE_DIR $(storage_roots | tr '\n' ' ')"
	for d in $writable; do
		mkdir -p "$d"
		chown -R "$SERVICE_USER:$SERVICE_USER" "$d"
	done
	echo "ctl: $SERVICE_USER owns $writable"
	SERVICE_OWNER=$SERVICE_USER:$SERVICE_USER
	secrets=$(service_secrets | tr '\n' ' ')
	service_secrets | while read -r f; do give_to_service "$f"; done
	[ -z "$secrets" ] || echo "ctl: $SERVICE_USER owns (to read) $secrets"
	for p in "$CONFIG_DIR" "$BIN" $writable; do
		case $(realpath -m "$p") in
		/tmp | /tmp/* | /var/tmp | /var/tmp/*)
			echo "ctl: warning: $p is under /tmp or /var/tmp, which the service does not see (the unit has PrivateTmp=yes, a /tmp of its own): put the checkout elsewhere (e.g. /srv/berth) and run install again" >&2
			break
			;;
		esac
	done
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
		echo "ctl: systemd is not running here; the unit is in place for when it is."
		echo "     Until then ./ctl start runs berth as a daemon as user $SERVICE_USER (run ./ctl as root or as $SERVICE_USER)"
	fi
}

install_test_packages() {
	missing=
	for cmd in skopeo:skopeo dockerd:docker.io ctr:containerd docker-registry:docker-registry htpasswd:apache2-utils umoci:umoci systemd-analyze:systemd pebble:pebble openssl:openssl curl:curl chromium:chromium chromedriver:chromium-driver prometheus:prometheus caddy:caddy; do
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
restart) restart ;;
status) status ;;
reload) reload ;;
install) install ;;
logs)
	use_systemd && exec journalctl -u "$UNIT" -n 50 -f
	[ -f "$LOG_FILE" ] || die "no log yet at $LOG_FILE (start berth first)"
	exec tail -n 50 -F "$LOG_FILE"
	;;
debug)
	service_prefix
	build
	ensure_credentials
	RUST_LOG=${RUST_LOG:-debug} exec $AS_SERVICE "$BIN" serve --config-dir "$CONFIG_DIR"
	;;
check) build; exec "$BIN" check --config-dir "$CONFIG_DIR" ;;
gc | fsck | ca-path)
	service_prefix
	build
	exec $AS_SERVICE "$BIN" "$cmd" --config-dir "$CONFIG_DIR" "$@"
	;;
passwd)
	[ $# -ge 2 ] || die "usage: ./ctl passwd INSTANCE USER [--delete] [--allow-short]"
	service_prefix
	build
	"$BIN" passwd --config-dir "$CONFIG_DIR" "$@"
	give_to_service "$(htpasswd_of "$CONFIG_DIR/instances/$1.toml")"
	# A running berth notices within a second anyway; SIGHUP makes it now.
	if p=$(pid); then kill -HUP "$p"; fi
	;;
import-registry2)
	service_prefix
	build
	"$BIN" import-registry2 --config-dir "$CONFIG_DIR" "$@"
	# The credentials files it wrote are read by the service.
	service_secrets | while read -r f; do give_to_service "$f"; done
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
