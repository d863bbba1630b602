#!/usr/bin/env bash
# Installs (Debian packages) and starts a single-node Slurm cluster on this machine for the Slurm
# backend's tests; idempotent. Needs root or sudo. Leaves it running: `make slurm-down` stops it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v slurmctld >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi
if sinfo -h -o %T 2>/dev/null | grep -qx idle; then echo "slurm: already up"; exit 0; fi
cpus=$(nproc)
memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
# A test cluster starts from empty state: no jobs of an earlier machine or configuration.
pgrep -x slurmctld >/dev/null || $sudo rm -rf /var/spool/orchestrate-slurm
$sudo mkdir -p /run/munge /var/spool/orchestrate-slurm/ctld /var/spool/orchestrate-slurm/d /var/log/slurm /etc/slurm
$sudo chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || $sudo runuser -u munge -- /usr/sbin/mungekey --create 2>/dev/null || true
pgrep -x munged >/dev/null || $sudo runuser -u munge -- /usr/sbin/munged
sed "s/@CPUS@/$cpus/; s/@MEMORY@/$memory/" "$here/slurm.conf.in" | $sudo tee /etc/slurm/slurm.conf >/dev/null
$sudo cp "$here/gres.conf" /etc/slurm/gres.conf
pgrep -x slurmctld >/dev/null || $sudo /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || $sudo /usr/sbin/slurmd -N localhost
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null || true)
  if [ "$state" = idle ]; then echo "slurm: up ($cpus CPUs, $memory MiB, localhost)"; exit 0; fi
  # A node left DOWN/DRAIN by an earlier test run comes back.
  case "$state" in down*|drain*) $sudo scontrol update nodename=localhost state=resume 2>/dev/null || true;; esac
  sleep 1
done
echo "slurm: the cluster did not become idle; see /var/log/slurm/" >&2; sinfo >&2 || true; exit 1
