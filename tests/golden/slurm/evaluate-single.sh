#!/bin/bash
#SBATCH --job-name=20261130T184000Z-4242
#SBATCH --comment=6f1d0c2b6a55e0c1d1b0a4c7f4e3d2c1b0a99887766554433221100ffeeddcc
#SBATCH --output=/shared/results/runs/20261130T184000Z-4242/logs/evaluate-%j.log
#SBATCH --open-mode=append
#SBATCH --cpus-per-task=1
# orchestrate: 1 evaluate stage of run 20261130T184000Z-4242. Task i computes the job spec on line i + 1
# of the list; every path is absolute, so the results directory must be shared with the nodes.
list=/shared/results/runs/20261130T184000Z-4242/slurm/3.jobs
spec=$(sed -n "$((${SLURM_ARRAY_TASK_ID:-0} + 1))p" "$list" 2>/dev/null)
if [ -z "$spec" ] || [ ! -r "$spec" ]; then
  echo "error: the job spec of task ${SLURM_ARRAY_TASK_ID:-0} (${spec:-listed in $list}) is not readable on $(hostname): the results directory must be on a file system shared with the machine running orchestrate" >&2
  exit 2
fi
export OMP_NUM_THREADS=1
export RAYON_NUM_THREADS=1
export GOMP_SPINCOUNT=10000
export CUDA_VISIBLE_DEVICES=''
exec /opt/orchestrate/bin/orchestrate stage "$spec"
