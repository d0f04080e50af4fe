#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py: installs munge and SLURM (Debian/Ubuntu
# packages), writes one slurm.conf (this host as controller and as the only node, its CPUs and memory), starts
# munged, slurmctld and slurmd, and waits until `sinfo` shows the node idle. Running it again changes nothing on a
# cluster that is up. Needs root (or sudo); exits non-zero with the reason when the cluster cannot come up.
#   bash .ci/slurm_cluster.sh
set -euo pipefail
fail() { echo "slurm_cluster: $*" >&2; exit 1; }
sudo=$([ "$(id -u)" -ne 0 ] && command -v sudo || true)
[[ $(id -u) -eq 0 || -n $sudo ]] || fail "needs root or sudo (daemons and /etc/slurm)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
        || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || fail "no apt-get: install munge, slurmctld, slurmd and slurm-client yourself"
    $sudo apt-get update -q || fail "apt-get update failed"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        munge slurmctld slurmd slurm-client || fail "apt-get install of munge and SLURM failed"
fi

# munge: the key the daemons and the clients authenticate with
if [[ ! -s /etc/munge/munge.key ]]; then
    $sudo mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
$sudo chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
$sudo chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    $sudo runuser -u munge -- munged || fail "munged does not start"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || fail "munged started but does not answer (see /var/log/munge/munged.log)"
fi

# slurm.conf: the node as slurmd sees it (CPUs, sockets, memory); jobs run as the submitting user, requeue allowed
node=$(slurmd -C | head -1)
[[ $node == NodeName=* ]] || fail "slurmd -C does not describe this node: $node"
host=${node#NodeName=}
host=${host%% *}
conf=$(mktemp)
cat > "$conf" <<EOF
ClusterName=undistill
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
# finished jobs stay visible to scontrol (restart counts) for an hour; there is no accounting database
MinJobAge=3600
MailProg=/bin/true
SchedulerType=sched/backfill
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
$sudo mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if ! cmp -s "$conf" /etc/slurm/slurm.conf; then
    $sudo cp "$conf" /etc/slurm/slurm.conf
    $sudo chmod 0644 /etc/slurm/slurm.conf
    changed=1
fi
rm -f "$conf"

if scontrol ping 2>/dev/null | grep -q "is UP"; then
    [[ -n ${changed:-} ]] && $sudo scontrol reconfigure
else
    $sudo slurmctld || fail "slurmctld does not start (see /var/log/slurm/slurmctld.log)"
fi
if ! [[ -f /run/slurmd.pid ]] || ! $sudo kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; then
    $sudo slurmd || fail "slurmd does not start (see /var/log/slurm/slurmd.log)"
fi

# the node idle: a node left down or drained by an earlier cluster is returned to service
for i in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    case $state in
        idle|mixed|allocated) echo "slurm_cluster: node $host $state"; exit 0 ;;
        down*|drain*) $sudo scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
fail "node $host is not idle after 60 s (sinfo: ${state:-no answer}; see /var/log/slurm/)"
