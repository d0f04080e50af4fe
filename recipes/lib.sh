# The words a recipe is written in. A recipe sources this file with its name and its arguments:
#   source "$(dirname "$0")/../lib.sh" nasty_teacher/table1 "$@"
# then declares cells and runs them, stage by stage (a stage reads the checkpoints of the stages before it):
#   cell NAME SCRIPT OPTIONS...   a run per seed in $OUT/NAME/s<seed>; @OTHER in OPTIONS is that seed's
#                                 $OUT/OTHER/s<seed>/checkpoint.pt. SCRIPT: train_teacher.py, distill_student.py, or
#                                 undistill.importer (a model released elsewhere, imported as it is)
#   searched NAME SCRIPT OPTIONS... a student whose attack searches the settings OPTIONS leave open (Method.search;
#                                 HTC's tau and m), each seed choosing on a validation split of its training images
#                                 and training its choice again on all of them (undistill.recipe)
#   run_cells [SEEDS]             runs the cells declared since the last run_cells (finished ones are skipped,
#                                 unfinished ones resumed), then forgets them; SEEDS (e.g. 0) in place of $SEEDS
#                                 for this stage: teachers of one seed that the students of every seed read
#   table LAYOUT.toml             writes $OUT/<layout name>.md and .json: the paper's table, ours beside its numbers
#   evaluate OPTIONS...           python -m undistill.evaluate OPTIONS (a measure of trained checkpoints)
#   report                        $OUT/verdict.md and .csv: python -m undistill.report over every run in $OUT
#   audit OPTIONS...              python -m undistill.audit OPTIONS (every attack on one teacher)
#   $(arch NAME)                  the architecture a teacher named NAME trains as (see arch below)
#   figure curve|history LAYOUT.toml   $OUT/<layout name>.png: the layout's runs as the paper's line plot
#   figure responses|tsne|inverted NAME OPTIONS...   $OUT/NAME.png: trained models' softmax outputs, the t-SNE of
#                                 their features, the images DeepInversion inverted (undistill.recipe_figures)
# In a smoke run one Python process, started here, does the work of these words (undistill.recipe serve): torch is
# imported once per recipe, not once per stage; a real run starts a process per word and per cell.
#
# What the environment chooses (recipes/README.md):
#   SEEDS=0,1,2          the seeds (each cell runs once per seed)
#   LAUNCH=local         one run after the other here; JOBS=N: N at a time as processes
#          torchrun      each run under torchrun with NPROC_PER_NODE processes (GPUs) on this node
#          slurm         each stage as one SLURM array (submitit), waited for; SLURM_OPTIONS="--partition gpu
#                        --gpus-per-node 8 --nodes 2 --time 2880 ..." (undistill.launch's options)
#          slurm-local   the same through submitit's local executor (a check on a machine without SLURM)
#   SMOKE=1              every cell tiny on synthetic data of the same layout (a test of the recipe, minutes on
#                        a CPU); its runs go to runs/smoke/<recipe> unless the first argument names a directory
#   DEVICE=cpu|cuda      every run's --device (default: the scripts' auto)
#   <DATASET>_DIR        where a dataset lives, e.g. CIFAR10_DIR=/data/cifar10 (default data/<dataset>)
set -euo pipefail
RECIPE=$1
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SEEDS=${SEEDS:-0,1,2}
SMOKE=${SMOKE:-0}
LAUNCH=${LAUNCH:-local}
if [[ $SMOKE == 1 ]]; then OUT=${1:-runs/smoke/$RECIPE}; else OUT=${1:-runs/$RECIPE}; fi
LAYOUTS=recipes/$(dirname "$RECIPE")

_cells=$(mktemp)
trap 'rm -f "$_cells"' EXIT
_smoke=()
[[ $SMOKE == 1 ]] && _smoke=(--smoke)
_run=(--out "$OUT" --seeds "$SEEDS" "${_smoke[@]}")
[[ -n ${DEVICE:-} ]] && _run+=(--device "$DEVICE")
case $LAUNCH in
    local) _run+=(--jobs "${JOBS:-1}") ;;
    torchrun) _run+=(--nproc-per-cell "${NPROC_PER_NODE:?LAUNCH=torchrun needs NPROC_PER_NODE}") ;;
    slurm) read -ra _slurm <<< "${SLURM_OPTIONS:-}"; _run+=(--slurm "${_slurm[@]}") ;;
    slurm-local) read -ra _slurm <<< "${SLURM_OPTIONS:-}"; _run+=(--slurm-local "${_slurm[@]}") ;;
    *) echo "error: LAUNCH=$LAUNCH (choose local, torchrun, slurm or slurm-local)" >&2; exit 2 ;;
esac

# A smoke run's words are served by one Python process (torch imported once: its cells take less time than starting
# Python); a real run's are each a process of their own, and so is each of its cells, so that a cell's memory and
# CUDA state end with it.
if [[ $SMOKE == 1 ]]; then
    exec {_stdout}>&1
    coproc _server { exec python3 -m undistill.recipe serve 3>&1 1>&"$_stdout"; }
    _requests=${_server[1]} _answers=${_server[0]}
    _ask() {  # a request to the server (a module of undistill and its arguments); returns its exit code
        printf '%q ' "$@" >&"$_requests"
        echo >&"$_requests"
        local code
        read -r code <&"$_answers" || code=1
        return "$code"
    }
else
    _ask() { python3 -m "undistill.$1" "${@:2}"; }
fi

cell() {
    printf '%q ' "$@" >> "$_cells"
    echo >> "$_cells"
}

searched() {
    printf '%q ' --search "$@" >> "$_cells"
    echo >> "$_cells"
}

run_cells() {
    _ask recipe run "$_cells" "${_run[@]}" ${1:+--seeds "$1"}
    : > "$_cells"
}

table() {
    _ask recipe table "$LAYOUTS/$1" --out "$OUT" --seeds "$SEEDS"
}

evaluate() {
    _ask evaluate "$@"
}

report() {
    _ask report "$OUT" --markdown "$OUT/verdict.md" --csv "$OUT/verdict.csv"
}

audit() {
    _ask audit "$@"
}

# Two smoke steps leave a ResNet-50's BatchNorm statistics unsettled and its eval-mode logits overflow, so nasty
# training against it diverges: smoke runs (SMOKE=1) train a ResNet-18 in its place, under the same names.
arch() { if [[ $SMOKE == 1 && $1 == resnet50 ]]; then echo resnet18; else echo "$1"; fi; }

figure() {
    case $1 in
        curve|history) _ask recipe_figures "$1" "$LAYOUTS/$2" --out "$OUT" --seeds "$SEEDS" ;;
        responses|tsne|inverted) _ask recipe_figures "$@" --out "$OUT" --seeds "$SEEDS" "${_smoke[@]}" ;;
        *) echo "error: figure $1 (choose curve, history, responses, tsne or inverted)" >&2; return 2 ;;
    esac
}
