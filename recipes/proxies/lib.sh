# The CIFAR-10 CPU proxy's words, sourced by its scripts after recipes/lib.sh. The model owner's teachers are plain
# CNNs trained on the whole of CIFAR-10 with seed 0 (Adam 1e-3, the CNN's schedule); the attacker's students
# (every seed of $SEEDS) hold 1,000 images per class and read those seed-0 teachers.
#   proxy_teachers [EPOCHS [NASTY OPTIONS...]]   teachers/ce, teachers/nasty (against ce), teachers/stingy (a
#                      release of ce); without arguments, kept as they are where cifar10_cpu_proxy.sh trained them
#   $(teacher NAME)    the checkpoint of teachers/NAME
#   "${student[@]}"    a student cell's script and options: plain CNN, 1,000 images per class, $student_epochs
#                      epochs (default 15)
#   "${measure[@]}"    the data and device options of python -m undistill.evaluate
data=(--dataset cifar10 --arch cnn)
subset=1000
[[ $SMOKE == 1 ]] && subset=2  # of the 20 images per class of the smoke data
student=(distill_student.py "${data[@]}" --subset "$subset" --epochs "${student_epochs:-15}")
# what python -m undistill.evaluate and the data's own tools read (the cells find the data themselves)
if [[ $SMOKE == 1 ]]; then data_dir=$OUT/.data/cifar10; else
    data_dir=${CIFAR10_DIR:-data/cifar10}
    bash datasets/cifar10_from_tar.sh "$data_dir"  # unpacked from $CIFAR10_TAR when missing
fi
measure=(--data-dir "$data_dir" --device "${DEVICE:-auto}")
[[ $SMOKE == 1 ]] && measure+=(--workers 0)

teacher() { echo "$OUT/teachers/$1/s0/checkpoint.pt"; }

proxy_teachers() {
    [[ $# == 0 && -f $OUT/teachers/stingy/s0/summary.json ]] && return
    local epochs=${1:-8}
    cell teachers/ce train_teacher.py "${data[@]}" --epochs "$epochs" --defense ce
    run_cells 0
    cell teachers/nasty train_teacher.py "${data[@]}" --epochs "$epochs" --defense nasty --adversary @teachers/ce \
        "${@:2}"
    cell teachers/stingy train_teacher.py --dataset cifar10 --defense stingy --from @teachers/ce
    run_cells 0
}
