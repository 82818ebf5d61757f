#!/usr/bin/env bash
# ostune setup: installs what is missing, then runs a demo tuning session or the test suite.
#   ./setup.sh demo   venv + package + redis-server/redis-tools, then a short real tuning session
#   ./setup.sh mysql-demo   the same for MySQL: + mariadb-server/mariadb-client/sysbench, then a
#                     short session of `ostune run --app mariadb --space mysql-latency`
#   ./setup.sh test   everything (MariaDB, sysbench, QEMU, debootstrap, ...), then the whole suite
#   ./setup.sh        install only (the runtime set)
set -euo pipefail
cd "$(dirname "$0")"

mode="${1:-install}"
shift || true

PYTHON="${PYTHON:-python3}"
VENV="${OSTUNE_VENV:-.venv}"

runtime_pkgs=(redis-server redis-tools)
mysql_pkgs=(mariadb-server mariadb-client sysbench)
test_pkgs=(mariadb-server mariadb-client sysbench qemu-system-x86 qemu-utils openssh-client
           openssh-server debootstrap sqlite3 systemd iproute2 procps kmod chromium postgresql)

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
want() { for p in "$@"; do have_pkg "$p" || need_apt+=("$p"); done; }

want "${runtime_pkgs[@]}"
[ "$mode" = "test" ] && want "${test_pkgs[@]}"
[ "$mode" = "mysql-demo" ] && want "${mysql_pkgs[@]}"
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need_apt[*]} (run as root, or: sudo apt-get install ${need_apt[*]})" >&2
    exit 2
  fi
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: ostune needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
extras="test"
[ "$mode" = "test" ] && extras="test,bench,report,postgres"
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[$extras]"

case "$mode" in
  demo)
    exec "$VENV/bin/ostune" run --trials 6 --repetitions 3 "$@"
    ;;
  mysql-demo)
    exec "$VENV/bin/ostune" run --app mariadb --space mysql-latency --trials 6 --repetitions 3 "$@"
    ;;
  test)
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  install)
    echo "setup: ready; try $VENV/bin/ostune run --trials 6"
    ;;
  *)
    echo "setup: unknown mode '$mode' (valid: demo, mysql-demo, test, install)" >&2
    exit 2
    ;;
esac
