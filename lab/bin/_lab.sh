# Sourced by the lab wrappers: where the lab lives and how to enter it.
LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB_DIR=${LAB_DIR:-/var/lib/svlab}
LAB_NETNS=${LAB_NETNS:-svlab}
VENV=${VENV:-$LAB_ROOT/.venv}
MASTER_CONF=$LAB_DIR/master/etc/salt
# salt / salt-run / salt-cp talk to the master the operator uses: the top master when the lab
# runs a syndic (LAB_SYNDIC=1; LAB_MASTER=syndic talks to the syndic's master instead). Minion
# keys (hypervisors', VMs') live on the hypervisors' master: salt-key always uses MASTER_CONF.
CLI_CONF=$MASTER_CONF
if [ -e "$LAB_DIR/syndic" ] && [ "${LAB_MASTER:-top}" != syndic ]; then
  CLI_CONF=$LAB_DIR/top/etc/salt
fi
# As on a master or hypervisor shell: Python keeps bytecode caches of the synced modules.
unset PYTHONDONTWRITEBYTECODE
if [ ! -e "/run/netns/$LAB_NETNS" ]; then
  echo "the lab is not running: make lab-up" >&2
  exit 1
fi
lab_netns() { nsenter --net="/run/netns/$LAB_NETNS" "$@"; }
# hypervisorN -> the pid holding its namespaces
lab_holder() {
  local n=${1#hypervisor}
  local pid
  pid=$(cat "$LAB_DIR/hv$n/holder.pid" 2>/dev/null) || { echo "no such lab hypervisor: $1" >&2; return 1; }
  [ -d "/proc/$pid" ] || { echo "$1 is not running (make lab-up)" >&2; return 1; }
  echo "$pid"
}
