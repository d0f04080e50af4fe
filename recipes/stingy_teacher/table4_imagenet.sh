#!/usr/bin/env bash
# Stingy Teacher: Sparse Logits Suffice to Fail Knowledge Distillation (Ma et al.), Table 4: ImageNet.
# A DenseNet-121 teacher (CE) and its stingy release (top k = 100 of 1000 logits, ratio 0.1); ResNet-18 students
# trained from scratch (the baseline, and the teacher of self-KD), with label smoothing (the verdict's baseline),
# by KD (alpha 0.9, tau 20) from the normal and the stingy DenseNet-121, and by self-KD from the scratch ResNet-18
# (the table's row is the ResNet-18: all its numbers are ResNet-18 students). The paper's ImageNet schedule: SGD,
# 90 epochs, x0.1 at 30, 60 and 80, wd 1e-4, lr 0.1 at batch 256; here global batch 1024, 8 loader workers per GPU
# (per process), so lr 0.4 by the linear scaling rule of "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour"
# (Goyal et al.), with its 5 epochs of warmup: the engine's linear warmup, from 0 (theirs starts at the batch-256 lr
# 0.1). --scale-lr would not do: it scales from the papers' batch 128.
#
# The teacher is torchvision's published DenseNet-121, unchanged, when DENSENET121_WEIGHTS names its file (the
# published densenet121-a639ec97.pth, with its old key names, or a state_dict of
# torchvision.models.densenet121(weights="IMAGENET1K_V1"); absolute, or from the repository's root): it is imported
# by undistill.importer (no training, no fine-tuning) and measured on the validation split. Without it, the
# teacher is trained here (90 epochs, as above).
#
# LOADER=torchvision (default) or ffcv; with ffcv the .beton files are written first where they are missing, in
# FFCV_DIR (default <data>/ffcv). Meant for GPUs: LAUNCH=torchrun NPROC_PER_NODE=8, or LAUNCH=slurm.
#   bash recipes/stingy_teacher/table4_imagenet.sh [RUN_DIR]   (SEEDS, LAUNCH, SMOKE, IMAGENET_DIR: recipes/lib.sh)
source "$(dirname "$0")/../lib.sh" stingy_teacher/table4_imagenet "$@"
data=(--dataset imagenet --loader "${LOADER:-torchvision}" --workers 8)

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

train=(--batch-size 1024 --lr 0.4 --warmup-epochs 5)
if [[ -n ${DENSENET121_WEIGHTS:-} ]]; then
    cell ce/densenet121 undistill.importer "$DENSENET121_WEIGHTS" --arch tv.densenet121 "${data[@]}"
else
    cell ce/densenet121 train_teacher.py "${data[@]}" "${train[@]}" --arch tv.densenet121 --defense ce
fi
cell ce/resnet18 train_teacher.py "${data[@]}" "${train[@]}" --arch tv.resnet18 --defense ce
cell ls/resnet18 distill_student.py "${data[@]}" "${train[@]}" --arch tv.resnet18 --attack ls
run_cells
cell stingy/densenet121 train_teacher.py "${data[@]}" --defense stingy --from @ce/densenet121 --ratio 0.1
cell kd/ce-densenet121/resnet18 distill_student.py "${data[@]}" "${train[@]}" --arch tv.resnet18 --attack kd \
    --teacher @ce/densenet121 --alpha 0.9 --tau 20
cell kd/self/resnet18 distill_student.py "${data[@]}" "${train[@]}" --arch tv.resnet18 --attack kd \
    --teacher @ce/resnet18 --alpha 0.9 --tau 20
run_cells
cell kd/stingy-densenet121/resnet18 distill_student.py "${data[@]}" "${train[@]}" --arch tv.resnet18 --attack kd \
    --teacher @stingy/densenet121 --alpha 0.9 --tau 20
run_cells
table table4_imagenet.toml
