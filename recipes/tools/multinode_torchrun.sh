#!/usr/bin/env bash
# Multi-node torchrun without a scheduler: run this same line on every node; the c10d rendezvous numbers the nodes.
# MASTER is one node's address (host[:port], default port 29500) that all the others can reach.
#   bash recipes/tools/multinode_torchrun.sh NNODES GPUS_PER_NODE MASTER[:PORT] JOB_ID SCRIPT [its options]
#   e.g. on both nodes: bash recipes/tools/multinode_torchrun.sh 2 8 node01:29500 cmim-in train_teacher.py \
#            --dataset imagenet --data-dir /data/imagenet --arch tv.densenet121 --defense cmim --batch-size 1024
# On SLURM, `--slurm --nodes 2 --gpus-per-node 8` (docs/distributed.md) sets this up by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
nnodes=$1 per_node=$2 master=$3 job=$4
shift 4
[[ $master == *:* ]] || master="$master:29500"
exec torchrun --nnodes="$nnodes" --nproc_per_node="$per_node" --rdzv_backend=c10d --rdzv_endpoint="$master" \
    --rdzv_id="$job" "$@"
