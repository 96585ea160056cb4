# Sourced by the lab wrappers: where the lab lives and how to enter it.
LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB_DIR=${LAB_DIR:-/var/lib/svlab}
LAB_NETNS=${LAB_NETNS:-svlab}
VENV=${VENV:-$LAB_ROOT/.venv}
MASTER_CONF=$LAB_DIR/master/etc/salt
# salt / salt-run / salt-cp talk to the master the operator uses: the top master when the lab
# runs a syndic (LAB_SYNDIC=1; LAB_MASTER=syndic talks to the syndic's master instead), the lab's
# master otherwise; LAB_MASTER=top picks the top master (also one `labctl.py syndic-attach` put
# above a one-master lab). Minion keys (hypervisors', VMs') live on the hypervisors' master:
# salt-key always uses MASTER_CONF.
CLI_CONF=$MASTER_CONF
case "${LAB_MASTER:-}" in
  "") if [ -e "$LAB_DIR/syndic" ]; then CLI_CONF=$LAB_DIR/top/etc/salt; fi ;;
  top)
    CLI_CONF=$LAB_DIR/top/etc/salt
    case "$(basename "$0")" in salt|salt-run|salt-cp)
      if [ ! -e "$CLI_CONF/master" ]; then
        echo "no top master in $LAB_DIR: LAB_SYNDIC=1 make lab-up, or lab/labctl.py syndic-attach" >&2
        exit 1
      fi ;;
    esac ;;
  syndic) ;;
  *) echo "LAB_MASTER=$LAB_MASTER: use top or syndic" >&2; exit 2 ;;
esac
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
