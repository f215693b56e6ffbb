#!/usr/bin/env bash
# Make a real one-node Slurm cluster (slurm-wlm 22.05 + munge) answer on Debian 12, as root.
# Idempotent: installs only what is missing, writes slurm.conf only when it is not ours yet
# (or differs), starts each daemon only when it is not running, and returns once `sinfo`
# shows the node idle. No systemd is assumed: the daemons are started by hand.
#
# Layout (all under one folder, so a reset is `rm -rf` of it):
#   /var/lib/cloudpromote-slurm/state     StateSaveLocation (jobs survive a slurmctld restart)
#   /var/lib/cloudpromote-slurm/spool     SlurmdSpoolDir
#   /var/lib/cloudpromote-slurm/jobcomp   JobCompLoc (read by `sacct -c`; no slurmdbd here)
#   /var/lib/cloudpromote-slurm/jwt_hs256.key  JWT key (auth/jwt, for slurmrestd's tokens)
#   /var/log/cloudpromote-slurm/          slurmctld.log, slurmd.log, slurmrestd.log
#
# slurmrestd listens on 127.0.0.1:$CLOUDPROMOTE_SLURMRESTD_PORT (default 6820) as the
# unprivileged user cloudpromote-rest (it refuses to run as root or SlurmUser) and takes
# JWT tokens: `scontrol token username=root lifespan=3600` makes one.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

ROOT=/var/lib/cloudpromote-slurm
LOGS=/var/log/cloudpromote-slurm
RUN=/run/cloudpromote-slurm
CONF=/etc/slurm/slurm.conf
MARKER="# Written by jupyter-cloudpromote .ci/setup-slurm.sh"
JWT_KEY=$ROOT/jwt_hs256.key
REST_USER=cloudpromote-rest
REST_PORT=${CLOUDPROMOTE_SLURMRESTD_PORT:-6820}

say() { echo "[setup-slurm] $*"; }

if [ "$(id -u)" != 0 ]; then
  say "must run as root (installs packages and starts munged, slurmctld, slurmd)" >&2
  exit 1
fi
# Daemons keep the working directory they start in: start them from / so they outlive the
# checkout that ran this script (slurmrestd fails every request once its cwd is gone).
cd /

# 1. Packages.
missing=()
command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
command -v munged >/dev/null 2>&1 || missing+=(munge)
# The login-node (ssh) tests start their own sshd on 127.0.0.1; only the binaries are needed.
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v slurmrestd >/dev/null 2>&1 || missing+=(slurmrestd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "slurmctld, slurmd, slurm-client, munge, openssh, slurmrestd and curl already installed"
fi

# 2. munge: the key and the daemon (run as the munge user, socket in /run/munge).
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile=/etc/munge/munge.key --force
  else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_answers; then
  say "munged already answering"
else
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 1 20); do
    munge_answers && break
    sleep 0.5
  done
  munge_answers || { say "munged does not answer" >&2; exit 1; }
fi

# 3. slurm.conf for one node, sized to this machine (slurmd drains a node that claims more
#    CPUs or memory than it has).
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
install -d -m 0755 "$ROOT" "$ROOT/state" "$ROOT/spool" "$LOGS" "$RUN" /etc/slurm
# The JWT key slurmctld signs and checks slurmrestd's tokens with: only SlurmUser reads it.
if [ ! -s "$JWT_KEY" ]; then
  say "creating $JWT_KEY"
  (umask 077 && dd if=/dev/urandom bs=32 count=1 of="$JWT_KEY" status=none)
fi
chown root:root "$JWT_KEY"
chmod 0600 "$JWT_KEY"
wanted=$(cat <<EOF
$MARKER
ClusterName=cloudpromote
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# JWT as a second authentication, for slurmrestd (rest_auth/jwt).
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Jobs without --mem do not claim the whole node's memory.
DefMemPerCPU=1024
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
# Memory limits (--mem) are enforced by the accounting gatherer (no cgroups here).
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/filetxt
JobCompLoc=$ROOT/jobcomp
# Finished jobs stay visible to squeue/scontrol for 10 minutes.
MinJobAge=600
# Seconds between SIGTERM and SIGKILL at a time limit or scancel.
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  say "$CONF exists and was not written by this script: using it as it is"
elif [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$wanted" ]; then
  say "$CONF already up to date"
else
  say "writing $CONF (node localhost: $cpus CPUs, ${mem_mb} MB)"
  printf '%s\n' "$wanted" >"$CONF"
  # A changed config needs restarted daemons.
  for pidfile in "$RUN/slurmrestd.pid" "$RUN/slurmd.pid" "$RUN/slurmctld.pid"; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      say "stopping $(basename "$pidfile" .pid) to load the new config"
      kill "$(cat "$pidfile")"
      for _ in $(seq 1 20); do kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || break; sleep 0.5; done
    fi
  done
fi
# cgroup.conf is read by slurmd even with proctrack/linuxproc on some builds: keep it trivial.
[ -f /etc/slurm/cgroup.conf ] || printf 'CgroupPlugin=autodetect\n' >/etc/slurm/cgroup.conf

# 4. The daemons.
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running "$RUN/slurmctld.pid"; then
  say "slurmctld already running (pid $(cat "$RUN/slurmctld.pid"))"
else
  say "starting slurmctld (log: $LOGS/slurmctld.log)"
  slurmctld
fi
if running "$RUN/slurmd.pid"; then
  say "slurmd already running (pid $(cat "$RUN/slurmd.pid"))"
else
  say "starting slurmd (log: $LOGS/slurmd.log)"
  slurmd -N localhost
fi

# 5. Wait for the node to be idle (or already busy with jobs from an earlier run).
state=""
for _ in $(seq 1 60); do
  state=$(sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -n 1 || true)
  case "$state" in
    idle | mixed | allocated) break ;;
    down* | drain*)
      scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
case "$state" in
  idle | mixed | allocated) say "ready: node localhost is $state"; sinfo ;;
  *)
    say "the node did not become idle (state: ${state:-no answer}); last log lines:" >&2
    tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
    exit 1 ;;
esac

# 6. slurmrestd on 127.0.0.1, as an unprivileged user, taking JWT tokens. SLURM_JWT=daemon
#    makes it talk to slurmctld with the caller's token rather than with munge.
if ! id -u "$REST_USER" >/dev/null 2>&1; then
  say "creating the system user $REST_USER (runs slurmrestd)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$REST_USER"
fi
rest_token() { scontrol token username=root lifespan=300 2>/dev/null | sed -n 's/^SLURM_JWT=//p'; }
rest_answers() {
  local token
  token=$(rest_token) || return 1
  [ -n "$token" ] || return 1
  curl -fsS -o /dev/null --max-time 5 -H "X-SLURM-USER-NAME: root" \
    -H "X-SLURM-USER-TOKEN: $token" "http://127.0.0.1:$REST_PORT/slurm/v0.0.38/ping"
}
if running "$RUN/slurmrestd.pid" && [[ "$(readlink "/proc/$(cat "$RUN/slurmrestd.pid")/cwd")" == *"(deleted)" ]]; then
  # Started from a checkout that is gone since: it would fail every submission.
  say "restarting slurmrestd (its working directory was deleted)"
  kill "$(cat "$RUN/slurmrestd.pid")" 2>/dev/null || true
  sleep 1
fi
if running "$RUN/slurmrestd.pid"; then
  say "slurmrestd already running (pid $(cat "$RUN/slurmrestd.pid"))"
else
  say "starting slurmrestd on 127.0.0.1:$REST_PORT as $REST_USER (log: $LOGS/slurmrestd.log)"
  SLURM_JWT=daemon setsid setpriv --reuid="$REST_USER" --regid="$REST_USER" --clear-groups \
    /usr/sbin/slurmrestd -a rest_auth/jwt -s openapi/v0.0.38 "127.0.0.1:$REST_PORT" \
    </dev/null >>"$LOGS/slurmrestd.log" 2>&1 &
  echo $! >"$RUN/slurmrestd.pid"
fi
for _ in $(seq 1 30); do
  rest_answers 2>/dev/null && break
  sleep 1
done
if rest_answers; then
  say "ready: slurmrestd answers http://127.0.0.1:$REST_PORT/slurm/v0.0.38/ping"
else
  say "slurmrestd does not answer on 127.0.0.1:$REST_PORT; last log lines:" >&2
  tail -n 20 "$LOGS/slurmrestd.log" >&2 || true
  exit 1
fi
