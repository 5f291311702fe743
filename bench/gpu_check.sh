#!/usr/bin/env bash
# Every GPU measurement and GPU test of hcmi in one go, for a GPU machine that has PyTorch but maybe no network and
# not all of hcmi's other dependencies (a cluster node, a rented box).
#
#   bash bench/gpu_check.sh prepare            # where pip has network: .whl/ gets the wheels such a machine may lack
#                                              # (GPU_CHECK_PYTHON_VERSION, default 3.12); the synthetic benchmark's
#                                              # frame cache is built under data/ (snakemake) for the training run
#   bash bench/gpu_check.sh run [OUTDIR]       # on the GPU machine (copy or mount the repository with .whl/ and
#                                              # data/raw/synthetic/annotations.parquet + data/frames/synthetic)
#   bash bench/gpu_check.sh run --quick [OUTDIR]   # the same at smoke-test size on whatever device there is
#
# `run` writes seven files into OUTDIR (default data/gpu_check): check.log (everything printed: machine, each step's
# output, exit status and seconds), the benchmark JSON and summary.md (bench/run.py), pytest.xml (tests/test_gpu.py),
# and the training run's train_log.csv and metrics.json (its checkpoints stay in a scratch folder). A step that
# fails is reported and the next one still runs; the exit status says whether all passed. Without the training run's
# frame cache nothing runs: the check could not pass. Environment: PYTHON
# (default python3), GPU_CHECK_DATA (data root of the training run, default data), GPU_CHECK_SITE (where carried
# wheels are installed, default /tmp/hcmi-site).
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="$REPO/.whl"
# what a PyTorch image (torch, torchvision, numpy, pandas, pyarrow, pyyaml, tqdm, regex, timm, huggingface_hub,
# safetensors, pytest) lacks to import hcmi's training and evaluation code: open_clip and the schema validator
CARRIED=(open_clip_torch ftfy wcwidth pydantic pydantic-core annotated-types typing-inspection)

prepare() {
    local version="${GPU_CHECK_PYTHON_VERSION:-3.12}" pins=() name
    local installed
    for name in "${CARRIED[@]}"; do  # the versions installed here, so both machines run the same code
        installed="$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')"
        [ -n "$installed" ] || { echo "prepare: $name is not installed for $PY: run this from the environment" \
                                      "hcmi is installed in (or set PYTHON)" >&2; return 1; }
        pins+=("$name==$installed")
    done
    mkdir -p "$WHEELS" && rm -f "$WHEELS"/*.whl  # one version of each: two would stop the install there
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "${pins[@]}" || { echo "prepare: pip download failed for: ${pins[*]}" >&2; return 1; }
    (cd "$REPO" && snakemake --cores 2 \
        data/frames/synthetic/{train,val,test}/index.parquet) || return 1
    echo "prepare: wheels in .whl/ ($(du -sh "$WHEELS" | cut -f1)); frame cache in data/frames/synthetic" \
         "($(du -sh "$REPO/data/frames/synthetic" | cut -f1)). Carry .whl, data/frames/synthetic and" \
         "data/raw/synthetic/annotations.parquet to the GPU machine."
}

failures=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, and remember a failure
    local name="$1" limit="$2" start rc
    shift 2
    echo "== $name (limit ${limit}s): $*"
    start=$(date +%s)
    timeout --signal=INT --kill-after=20 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - start ))s"
    [ "$rc" -eq 0 ] || failures+=("$name (exit $rc)")
}

run() {
    local quick=0 out
    if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
    out="$(mkdir -p "${1:-$REPO/data/gpu_check}" && cd "${1:-$REPO/data/gpu_check}" && pwd)" || return 1
    run_steps "$quick" "$out" 2>&1 | tee "$out/check.log"
    return "${PIPESTATUS[0]}"
}

have_training_data() {  # have_training_data DATA_ROOT: the synthetic benchmark's annotations and training frames
    [ -f "$1/frames/synthetic/train/index.parquet" ] && [ -f "$1/raw/synthetic/annotations.parquet" ]
}

run_steps() {
    local quick="$1" out="$2" data="${GPU_CHECK_DATA:-$REPO/data}" site="${GPU_CHECK_SITE:-/tmp/hcmi-site}"
    [ ! -d "$data" ] || data="$(cd "$data" && pwd)"  # absolute: the training run links into it from elsewhere
    cd "$REPO" || return 1
    # the carried wheels, where hcmi's dependencies are missing (not over an environment that has them)
    # (found, not imported: importing open_clip alone takes seconds)
    if ! "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in
('open_clip', 'ftfy', 'pydantic')))" 2> /dev/null && compgen -G "$WHEELS/*.whl" > /dev/null; then
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$WHEELS"/*.whl || { echo "run: installing the carried wheels failed" >&2; return 1; }
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HCMI_BENCH_DIR="$out"
    date -u; uname -a; { command -v nvidia-smi > /dev/null && nvidia-smi; } || echo "nvidia-smi: not available"
    local device benches params=(--params "$REPO/params.yaml") found
    # the device and torch's versions from one interpreter (importing torch is most of its start)
    found=$("$PY" -c "import torch; gpu = torch.cuda.is_available(); print('cuda' if gpu else 'cpu', 'torch',
torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0) if gpu else None)") \
        || { echo "run: $PY cannot import torch" >&2; return 1; }
    device="${found%% *}"
    echo "${found#* }"
    if [ "$quick" = 1 ]; then
        benches=(--quick --only "eval_similarity,train_step$([ "$device" = cuda ] && echo _cuda)")
        # the tests' sizes, trained 2 epochs on a backbone pretrained in 3 steps: a smoke test of the path, not of learning
        params+=(--params "$REPO/tests/fixtures/tiny.yaml" --set train.epochs=2 --set pretrain.images=256
                 --set pretrain.epochs=1)
    else
        [ "$device" = cuda ] || { echo "run: no CUDA device visible (use --quick for a CPU smoke test)" >&2; return 1; }
        benches=(--only eval_similarity,train_step_cuda)
    fi

    # without the training run's inputs the check cannot pass: say so before spending minutes of device time
    if ! have_training_data "$data"; then
        echo "== training run: no frame cache under $data (bash bench/gpu_check.sh prepare)"
        echo "gpu_check: FAILED: training run (no frame cache under $data)"
        return 1
    fi

    step "gpu tests" 240 "$PY" -m pytest -q -rs -p no:cacheprovider -o addopts="" tests/test_gpu.py \
        --junitxml="$out/pytest.xml"
    # a GPU test that skipped did not pass: where a CUDA device is visible, any skip fails the check
    step "gpu tests all ran ($device)" 30 "$PY" - "$out/pytest.xml" "$device" <<'PY'
import sys
import xml.etree.ElementTree as ElementTree

suites = ElementTree.parse(sys.argv[1]).getroot()
suites = [suites] if suites.tag == "testsuite" else list(suites.iter("testsuite"))
count = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "skipped", "failures", "errors")}
passed = count["tests"] - count["skipped"] - count["failures"] - count["errors"]
print(f"gpu tests: {passed} passed, {count['skipped']} skipped, {count['failures'] + count['errors']} failed")
if count["tests"] == 0 or (sys.argv[2] == "cuda" and count["skipped"]):
    sys.exit("gpu tests: a skipped or missing GPU test counts as not passed")
PY
    step "benchmarks" 360 "$PY" bench/run.py "${benches[@]}"

    # training and evaluation of HCMI on the synthetic benchmark (bf16 autocast on CUDA: train.amp)
    if have_training_data "$data"; then
        local root; root="$(mktemp -d)"
        mkdir -p "$root/raw/synthetic" && ln -s "$data/frames" "$root/frames"
        ln -s "$data/raw/synthetic/annotations.parquet" "$root/raw/synthetic/annotations.parquet"
        local hcmi=("$PY" -m hcmi.cli "${params[@]}" --set "compute.device=$device" --data-root "$root")
        # the backbone's weights first (the default pretrains it on still images: backbone.pretrained)
        step "weights ($device)" 300 "${hcmi[@]}" weights
        step "train hcmi ($device)" 300 "${hcmi[@]}" train --dataset synthetic --model hcmi --seed 0
        step "evaluate hcmi ($device)" 120 "${hcmi[@]}" evaluate --dataset synthetic --model hcmi --seed 0
        cp "$root/checkpoints/synthetic/hcmi/seeds/0/train_log.csv" \
            "$root/results/synthetic/hcmi/seeds/0/metrics.json" "$out/" 2>/dev/null || true
        rm -rf "$root"
    fi

    if [ "${#failures[@]}" -gt 0 ]; then
        echo "gpu_check: FAILED: ${failures[*]}"
        return 1
    fi
    echo "gpu_check: all steps passed; results in $out"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
esac
