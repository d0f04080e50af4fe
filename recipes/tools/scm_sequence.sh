#!/usr/bin/env bash
# Sequence of contrastive models (Distilling the Undistillable, Jandial et al., ECCV 2022, sec. 3.4): from a nasty
# teacher S^1, train S^i as a nasty teacher against S^(i-1), i = 2..K (the nasty defense, a recipe rather than a
# new loss), then distill one student from
# the ensemble of S^1..S^K (--attack scm; the student is reported against S^1). Resumable: rerun the same command,
# e.g. with another --seed among the student options to add a seed on the same sequence.
#   bash recipes/tools/scm_sequence.sh OUT K NASTY_CKPT [train_teacher.py options] -- [distill_student.py options]
#   bash recipes/tools/scm_sequence.sh runs/scm 3 runs/nasty/checkpoint.pt --epochs 8 -- --subset 1000 --seed 0
# Options common to both (--dataset, --data-dir, --arch) go on both sides. The sequence lands in OUT/s2..sK,
# the student in OUT/student-s<seed> unless the student options name an --output.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 3 ]; then
    echo "error: $# arguments (pass OUT K NASTY_CKPT [teacher options] -- [student options])" >&2
    exit 2
fi
out=$1 k=$2 first=$3
shift 3
teacher_opts=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do teacher_opts+=("$1"); shift; done
[ $# -gt 0 ] && shift
student_opts=("$@")
[ -f "$first" ] || { echo "error: $first does not exist: pass a nasty teacher's checkpoint.pt" >&2; exit 2; }
seed=0
for ((i = 0; i < ${#student_opts[@]}; i++)); do
    [ "${student_opts[$i]}" = --seed ] && seed=${student_opts[$((i + 1))]}
done

sequence=("$first")
for ((i = 2; i <= k; i++)); do
    python train_teacher.py --defense nasty --adversary "${sequence[-1]}" "${teacher_opts[@]}" --resume \
        --output "$out/s$i"
    sequence+=("$out/s$i/checkpoint.pt")
done
python distill_student.py --attack scm --teacher "${sequence[@]}" --output "$out/student-s$seed" \
    "${student_opts[@]}" --resume
