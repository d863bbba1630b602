#!/bin/bash
#SBATCH --job-name=20261130T184000Z-4242
#SBATCH --comment=20261130T184000Z-4242.3
#SBATCH --array=0-119
#SBATCH --output=/shared/results/runs/20261130T184000Z-4242/logs/prune-%A_%a.log
#SBATCH --open-mode=append
#SBATCH --partition=gpu
#SBATCH --account=lab
#SBATCH --time=4:00:00
#SBATCH --mem=32G
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --qos=normal
#SBATCH --constraint=a100|h100
# orchestrate: 120 prune stages of run 20261130T184000Z-4242. Task i computes the job spec on line i + 1
# of the list; every path is absolute, so the results directory must be shared with the nodes.
list=/shared/results/runs/20261130T184000Z-4242/slurm/3.jobs
spec=$(sed -n "$((${SLURM_ARRAY_TASK_ID:-0} + 1))p" "$list" 2>/dev/null)
if [ -z "$spec" ] || [ ! -r "$spec" ]; then
  echo "error: the job spec of task ${SLURM_ARRAY_TASK_ID:-0} (${spec:-listed in $list}) is not readable on $(hostname): the results directory must be on a file system shared with the machine running orchestrate" >&2
  exit 2
fi
# The task's stage key in its own comment: `squeue -o %k` shows what each task computes.
scontrol update JobId="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" Comment="$(basename "$spec" .json)" >/dev/null 2>&1 || true
export OMP_NUM_THREADS=8
export RAYON_NUM_THREADS=8
export GOMP_SPINCOUNT=10000
exec /opt/orchestrate/bin/orchestrate stage "$spec"
