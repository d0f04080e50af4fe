#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Table 4: ImageNet.
# A DenseNet-121 teacher (CE) and its stingy release (top k = 100 of 1000 logits, ratio 0.1); ResNet-18 students
# trained from scratch (the baseline, and the teacher of self-KD), with label smoothing (the verdict's baseline),
# by KD (alpha 0.9, tau 20) from the normal and the stingy DenseNet-121, and by self-KD from the scratch ResNet-18
# (the table's row is the ResNet-18: all its numbers are ResNet-18 students). The paper's ImageNet schedule: SGD 0.1,
# 90 epochs, x0.1 at 30, 60 and 80, wd 1e-4; global batch 1024, 8 loader workers per GPU (per process).
#
# The teacher is trained here (90 epochs), unless DENSENET121_WEIGHTS names a local state_dict of torchvision's
# densenet121, e.g. its pretrained weights saved with torch.save(torchvision.models.densenet121(
# weights="IMAGENET1K_V1").state_dict(), PATH) (the published .pth file keeps older key names, which --weights
# refuses). The teacher then starts from those weights (--weights) and trains the least a run trains: one epoch at
# the schedule's last rate, lr 1e-4.
#
# LOADER=torchvision (default) or ffcv; with ffcv the .beton files are written first where they are missing, in
# FFCV_DIR (default <data>/ffcv). Meant for GPUs: LAUNCH=torchrun NPROC_PER_NODE=8, or LAUNCH=slurm.
#   bash recipes/stingy_teacher/table4_imagenet.sh [RUN_DIR]   (SEEDS, LAUNCH, SMOKE, IMAGENET_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/table4_imagenet "$@"
data=(--dataset imagenet --loader "${LOADER:-torchvision}" --workers 8 --batch-size 1024)

if [[ ${LOADER:-torchvision} == ffcv ]]; then
    # the data the cells will read (in smoke mode the synthetic copy, written now)
    root=$(python3 -c 'import sys; from pathlib import Path; from undistill import UserError, recipe
try:
    print(recipe.data_dir("imagenet", Path(sys.argv[1]), sys.argv[2] == "1"))
except UserError as e:
    sys.exit(f"error: {e}")' "$OUT" "$SMOKE")
    betons=${FFCV_DIR:-$root/ffcv}
    if [[ ! -f $betons/train.beton || ! -f $betons/test.beton ]]; then
        python3 datasets/write_ffcv.py --dataset imagenet --data-dir "$root" --out "$betons" --overwrite
    fi
    data+=(--ffcv-dir "$betons")
fi

teacher=(--arch tv.densenet121)
if [[ -n ${DENSENET121_WEIGHTS:-} ]]; then
    teacher+=(--weights "$DENSENET121_WEIGHTS" --epochs 1 --lr 0.0001 --milestones "")
fi
cell ce/densenet121 train_teacher.py "${data[@]}" "${teacher[@]}" --defense ce
cell ce/resnet18 train_teacher.py "${data[@]}" --arch tv.resnet18 --defense ce
cell ls/resnet18 distill_student.py "${data[@]}" --arch tv.resnet18 --attack ls
run_cells
cell stingy/densenet121 train_teacher.py "${data[@]}" --defense stingy --from @ce/densenet121 --ratio 0.1
cell kd/ce-densenet121/resnet18 distill_student.py "${data[@]}" --arch tv.resnet18 --attack kd \
    --teacher @ce/densenet121 --alpha 0.9 --tau 20
cell kd/self/resnet18 distill_student.py "${data[@]}" --arch tv.resnet18 --attack kd --teacher @ce/resnet18 \
    --alpha 0.9 --tau 20
run_cells
cell kd/stingy-densenet121/resnet18 distill_student.py "${data[@]}" --arch tv.resnet18 --attack kd \
    --teacher @stingy/densenet121 --alpha 0.9 --tau 20
run_cells
table table4_imagenet.toml
