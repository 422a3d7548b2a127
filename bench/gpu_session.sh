#!/usr/bin/env bash
# Every GPU check hwprof owes, in stages that each fit one call of the device tool (10 minutes),
# writing only under $OUT (the tool returns that folder). Nothing is installed: the device
# image already has torch, torchvision, timm, tqdm, pandas, matplotlib, pynvml, pytest,
# pytest-benchmark and ncu; hwprof runs from this checkout through PYTHONPATH.
#
#   bash bench/gpu_session.sh env          # ~1 min: versions, nvidia-smi, what is importable
#   bash bench/gpu_session.sh check        # pytest -m cuda, ceiling probe, gpu_verify_measure, ceilings
#   bash bench/gpu_session.sh profile      # the default profile + torchvision resnet50 train bf16 channels_last
#   bash bench/gpu_session.sh memory       # bench/memory_validation.py + resnet50 --validate + --fit auto
#   bash bench/gpu_session.sh depthwise    # the depthwise study, fp32 and bf16, both formats
#   bash bench/gpu_session.sh counters     # the study's ncu counters at the reference shape
#
# Copy the fetched $OUT/ceilings/*.json into results/ceilings/ before the next call: the
# later stages then reuse the measured roofs instead of measuring them again. Each command
# runs under `timeout` (T seconds, default 540) and its exit code and duration go to
# $OUT/commands.txt, so a stage that overruns still returns what it wrote.
set -u -o pipefail
: "${OUT:?OUT must name the output folder}"
stage=${1:?"stage: env | check | profile | memory | depthwise | counters"}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
DATE=$(date -u +%Y-%m-%d)
TAG=${TAG:-h100}
mkdir -p "$OUT"

run() {   # run CMD...: log it, bound it, never stop the stage
    echo "+ $*" | tee -a "$OUT/commands.txt"
    local t0=$SECONDS rc
    timeout "${T:-540}" "$@"
    rc=$?
    echo "  rc=$rc after $((SECONDS - t0)) s" | tee -a "$OUT/commands.txt"
}
hw() { run "$PY" -m hwprof "$@"; }
ceil_cache="$OUT/ceilings"
mkdir -p "$ceil_cache"
cp results/ceilings/*.json "$ceil_cache/" 2>/dev/null || true   # reuse roofs measured by an earlier call

case "$stage" in
env)
    { date -u; nvidia-smi; "$PY" -c "import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
      "$PY" -c "import torchvision, timm, tqdm, pandas, matplotlib, pynvml; print('torchvision', torchvision.__version__, 'timm', timm.__version__)"
      command -v ncu && ncu --version; } > "$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
    ;;
check)
    run "$PY" -m pytest -q tests -m cuda -p no:cacheprovider --junitxml="$OUT/pytest-cuda.xml"
    T=300 run "$PY" -m pytest -q bench/test_ceiling_probe.py --benchmark-only -p no:cacheprovider
    run "$PY" bench/gpu_verify_measure.py --out "$OUT/verify-$TAG-$DATE"
    hw ceilings --device cuda --refresh --cache-dir "$ceil_cache" --format md --out "$OUT/ceilings/ceilings-$TAG-$DATE.md"
    ;;
profile)
    hw profile --ceilings-cache "$ceil_cache" --out "$OUT/profile/$TAG-$DATE"
    model=resnet50
    "$PY" -c "import torchvision" 2>/dev/null && model=torchvision:resnet50
    hw profile "$model" --mode train --dtype bf16 --channels-last --ceilings-cache "$ceil_cache" \
        --out "$OUT/profile/$TAG-resnet50-train-bf16-cl-$DATE"
    ;;
memory)
    run "$PY" bench/memory_validation.py --device cuda --out "$OUT/memory"
    T=120 hw memory resnet50 --batch 32 --mode train --optimizer adam --device cuda --validate \
        --format md --out "$OUT/memory/resnet50-bs32-adam-$TAG-$DATE.md"
    T=240 hw memory resnet50 --mode train --optimizer adam --device cuda --fit auto --validate \
        --format md --out "$OUT/memory/resnet50-fit-auto-$TAG-$DATE.md"
    ;;
depthwise)
    for dt in fp32 bf16; do
        T=270 hw study depthwise --device cuda --dtype "$dt" --ceilings-cache "$ceil_cache" \
            --out "$OUT/depthwise/$TAG-$DATE-$dt"
    done
    ;;
counters)
    hw study depthwise --device cuda --quick --counters --no-models --ceilings-cache "$ceil_cache" \
        --out "$OUT/depthwise/$TAG-$DATE-counters"
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
tail -n 20 "$OUT/commands.txt"
