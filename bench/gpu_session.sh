#!/usr/bin/env bash
# Every GPU check hwprof owes, in ONE bounded command whose results come back as two files.
#
#   OUT=/path bash bench/gpu_session.sh all              # the GPU run: 540 s in all (BUDGET=... overrides)
#   OUT=/path bash bench/gpu_session.sh --dry-run all    # the same stages on the CPU, tiny sizes, <= 120 s in all
#   OUT=/path bash bench/gpu_session.sh memory depthwise # some stages only (the budget is theirs alone)
#   bash bench/gpu_session.sh --list                     # the stages, their shares and commands
#
# The stages run in priority order (the table below). Stage i may run until
#     T0 + BUDGET * (share_1 + ... + share_i) / 100
# so a stage is killed at its share (SIGINT, then SIGKILL 10 s later) and the time a stage leaves
# unused passes on to the next. After EACH stage everything so far is re-packed into
# $OUT/gpu-results.tar.gz (SVGs left out; PNGs too if the archive would pass 15 MiB) and a line
# "stage, command, exit code, seconds" per command goes to $OUT/gpu-log.txt: these two files are
# the only outputs, so a stage that is killed, or a session cut short, still returns every
# earlier stage. Results are written under $WORK/gpu-results (default: a new folder in /tmp).
# `python bench/ingest_gpu.py $OUT/gpu-results.tar.gz` unpacks them into results/<device>-<date>/.
#
# Nothing is installed: hwprof runs from this checkout through PYTHONPATH. Of hwprof's
# dependencies the device image lacks platformdirs and psutil; neither is needed: HWPROF_CACHE_DIR
# is set here (platformdirs is imported only without it) and psutil is optional (RSS fields None).
# The env stage lists what is importable; --dry-run hides both packages to prove it.
#
# Environment: OUT (required), BUDGET (s; 540, --dry-run 120), WORK (work folder), PY (the
# checkout's .venv/bin/python when there is one, else python3: the device image's),
# CEILINGS_CACHE (a folder of cached ceilings to reuse, e.g. gpu-results/cache/ceilings of an
# earlier run), GPU_SESSION_TABLE (a file of `stage` lines replacing the table: tests, one-offs),
# DRY_JOBS (stages the dry run runs at once after env, pytest and ceilings; default 3), GIT_COMMIT
# (recorded in session.txt when the checkout has no .git).
set -u -o pipefail

SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"

# ---------------------------------------------------------------------------- the stage table
NAMES=() SHARES=() REAL=() DRY=()
stage() {   # stage NAME SHARE 'REAL COMMANDS' 'DRY-RUN COMMANDS'
    NAMES+=("$1") SHARES+=("$2") REAL+=("$3") DRY+=("$4")
}
# One line per stage, in priority order: name, share of the budget (percent; they sum to 96,
# the rest is slack for packing), the real run's commands, the dry run's (CPU, tiny sizes).
# Commands are bash: `run CMD...` logs and bounds one command; `hw` is `python -m hwprof`;
# $W is the results folder, $DEV the device, $CEIL the ceilings cache, $LIMIT this stage's seconds.
# Adding a stage (an LLM, distributed or prediction check) is adding one line here.
#     name       share  real run                                                        dry run
stage env          3  'env_report'                                                    'env_report'
stage pytest       8  'run $PY -m pytest -q -m cuda -p no:cacheprovider tests --junitxml=$W/pytest/junit.xml' 'run $PY -m pytest -q -m cuda -p no:cacheprovider -p no:platformdirs tests/measuring/test_measure_cuda.py tests/memory/test_memory_cuda.py --junitxml=$W/pytest/junit.xml'
stage ceilings    12  'run hw ceilings --device $DEV --refresh --cache-dir $CEIL --format json --out $W/ceilings/hwprof; run $PY bench/test_ceiling_probe.py --check --device $DEV --ceilings $W/ceilings/hwprof/ceilings.json --out $W/ceilings/probe.json' 'run hw ceilings --device $DEV --refresh --quick --rounds 2 --cache-dir $CEIL --format json --out $W/ceilings/hwprof; run $PY bench/test_ceiling_probe.py --quick --device $DEV --ceilings $W/ceilings/hwprof/ceilings.json --out $W/ceilings/probe.json'
stage profile     11  'run hw profile --device $DEV --ceilings-cache $CEIL --out $W/profile/default' 'run hw profile --device $DEV --quick --batch 1 --input 3x32x32 --ceilings-cache $CEIL --out $W/profile/default'
stage memory      16  'run $PY bench/memory_validation.py --device $DEV --time-budget $((LIMIT - 20)) --point-timeout 60 --out $W/memory' 'run $PY bench/memory_validation.py --device $DEV --quick --models lenet5,lstm --batches-per-model 1 --budget 0.02 --time-budget $((LIMIT - 10)) --point-timeout 30 --out $W/memory'
stage depthwise   15  'run hw study depthwise --device $DEV --dtype fp32 $DW_REF --budget-s 0.1 --no-fasternet --ceilings-cache $CEIL --out $W/depthwise/fp32; run hw study depthwise --device $DEV --dtype bf16 $DW_REF --budget-s 0.1 --no-fasternet --no-models --ceilings-cache $CEIL --out $W/depthwise/bf16' 'run hw study depthwise --device $DEV --dtype fp32 --channels-last no $DW_TINY --no-fasternet --no-models --quick-ceilings --ceilings-cache $CEIL --out $W/depthwise/fp32; run hw study depthwise --device $DEV --dtype bf16 --channels-last yes $DW_TINY --no-fasternet --no-models --no-plots --quick-ceilings --ceilings-cache $CEIL --out $W/depthwise/bf16'
stage counters    13  'run hw study depthwise --device $DEV --counters --ncu-clock-control none --dtype fp32 --channels-last no $DW_REF --budget-s 0.05 --no-fasternet --no-models --no-plots --ceilings-cache $CEIL --out $W/counters/fp32-nchw; run hw study depthwise --device $DEV --counters --ncu-clock-control none --dtype bf16 --channels-last yes $DW_REF --budget-s 0.05 --no-fasternet --no-models --no-plots --ceilings-cache $CEIL --out $W/counters/bf16-cl' 'run hw study depthwise --device $DEV --counters --ncu-clock-control none --dtype fp32 --channels-last no $DW_TINY --no-fasternet --no-models --no-plots --quick-ceilings --ceilings-cache $CEIL --out $W/counters/fp32-nchw'
stage resnet50     6  'run hw profile $(tv_or_zoo resnet50) --device $DEV --mode train --dtype bf16 --channels-last --batch 64 --budget 0.5 --ceilings-cache $CEIL --out $W/resnet50' 'run hw profile lenet5 --device $DEV --mode train --dtype bf16 --channels-last --batch 2 --quick --ceilings-cache $CEIL --out $W/resnet50'
stage llm          6  'run hw profile hf:llama --config $LLM_CFG --generate --prompt 512 --new-tokens 64 --batch 1,4,16,64 --device $DEV --dtype bf16 --budget 0.2 --ceilings-cache $CEIL --no-html --out $W/llm/generate; run hw memory hf:llama --config $LLM_CFG --generate --prompt 512 --new-tokens 64 --batch 16 --device $DEV --validate --format json --out $W/llm/memory' 'run hw profile hf:llama --config $LLM_TINY --generate --prompt 8 --new-tokens 2 --batch 1,2 --device $DEV --quick --ceilings-cache $CEIL --no-html --out $W/llm/generate; run hw memory hf:llama --config $LLM_TINY --generate --prompt 8 --new-tokens 2 --batch 2 --device $DEV --validate --format json --out $W/llm/memory'
stage steps        4  'run $PY bench/gpu_steps.py --device $DEV --out $W/steps; run hw profile lenet5 --device $DEV --mode train --optimizer adam --amp bf16 --batch 64 --budget 0.3 --ceilings-cache $CEIL --no-html --out $W/steps/amp-bf16' 'run $PY bench/gpu_steps.py --device $DEV --quick --out $W/steps; run hw profile lenet5 --device $DEV --mode train --optimizer adam --amp bf16 --batch 2 --quick --ceilings-cache $CEIL --no-html --out $W/steps/amp-bf16'
stage verify       2  'run $PY bench/gpu_verify_measure.py --device $DEV --budget 0.5 --ceilings-cache $CEIL --out $W/verify' 'run $PY bench/gpu_verify_measure.py --device $DEV --quick --models lenet5 --budget 0.02 --ceilings-cache $CEIL --out $W/verify'

DW_REF="--channels 256 --spatial 56 --batch 64"     # the reference shape: N64 C256 56x56
DW_TINY="--channels 8 --spatial 8 --batch 2 --budget-s 0.01"
# the ~100M-parameter llama-style model of results/llm (GQA: 4 KV heads); its tiny twin for the dry run
LLM_CFG="num_hidden_layers=12,hidden_size=768,num_attention_heads=12,num_key_value_heads=4,intermediate_size=2048,vocab_size=32000,tie_word_embeddings=true"
LLM_TINY="num_hidden_layers=1,hidden_size=64,num_attention_heads=4,num_key_value_heads=2,intermediate_size=128,vocab_size=256"

# ---------------------------------------------------------------------------- helpers (run by the stages)
run() {   # run CMD...: bounded by the stage's end, logged as "stage, command, exit code, seconds"
    local left=$((STAGE_END - $(date +%s))) t0=$SECONDS rc
    if ((left < 1)); then
        log_line "$STAGE" "$*" skipped 0
        return 0
    fi
    echo "+ $*" >&2
    timeout -s INT -k 10 "$left" bash -c '"$@"' run "$@"   # through bash: CMD may be a function (hw)
    rc=$?
    log_line "$STAGE" "$*" "$rc" "$((SECONDS - t0))"
    return 0   # a failed command does not stop the stage: its exit code is in the log
}
hw() { "$PY" -m hwprof "$@"; }
tv_or_zoo() {   # torchvision:NAME when torchvision is importable, else the zoo's NAME
    if "$PY" -c "import torchvision" 2>/dev/null; then echo "torchvision:$1"; else echo "$1"; fi
}
log_line() {   # log_line STAGE COMMAND EXIT_CODE SECONDS (tab-separated; commands shown relative to $W)
    local cmd=${2//"$W"/\$W}
    printf '%s\t%s\t%s\t%s\n' "$1" "${cmd//$'\t'/ }" "$3" "$4" >> "$LOG"
}
env_report() {   # versions, nvidia-smi, ncu, what is importable
    mkdir -p "$W/env"
    { date -u; uname -a; nvidia-smi 2>&1 || echo "nvidia-smi: not available"; } > "$W/env/nvidia-smi.txt"
    local ncu   # where hwprof.studies.depthwise.counters looks: $NCU, PATH, /opt/nvidia/nsight-compute
    ncu=${NCU:-$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -n 1)}
    { echo "${ncu:-ncu: not found}"; [[ -n "$ncu" ]] && "$ncu" --version; } > "$W/env/ncu.txt" 2>&1
    [[ $DEV == cpu ]] || run "$PY" -m pip list --format=freeze > "$W/env/pip-list.txt" 2>&1
    run "$PY" "$REPO/bench/ingest_gpu.py" --env "$W/env/env.json" --device "$DEV"
    cat "$W/env/env.json"
}
export -f run hw tv_or_zoo log_line env_report

# ---------------------------------------------------------------------------- packing
MAX_TAR_BYTES=$((15 * 2**20))
pack() {   # everything under $W into $OUT/gpu-results.tar.gz (atomically), SVGs (and, if too big, PNGs) left out
    cp "$LOG" "$W/gpu-log.txt"
    local tmp="$OUT/gpu-results.tar.gz.part"
    local opts=(--warning=no-file-changed --warning=no-file-removed --ignore-failed-read --exclude='*.svg'
                --exclude='.*.tmp-*' --exclude='.*.old-*')
    tar -C "$(dirname "$W")" -czf "$tmp" "${opts[@]}" "$(basename "$W")" 2>/dev/null
    if (($(stat -c %s "$tmp") > MAX_TAR_BYTES)); then
        echo "note: archive over $((MAX_TAR_BYTES / 2**20)) MiB; PNGs left out" >> "$W/session.txt"
        tar -C "$(dirname "$W")" -czf "$tmp" "${opts[@]}" --exclude='*.png' "$(basename "$W")" 2>/dev/null
    fi
    mv -f "$tmp" "$OUT/gpu-results.tar.gz"
}

# ---------------------------------------------------------------------------- main
DRY_FIRST="env pytest ceilings"   # the dry run's stages before the parallel ones (the ceilings are read later)

run_stage() {   # run_stage INDEX END DRY: one stage until END (epoch s), its output in logs/NAME.log
    local i=$1 start=$SECONDS cmd=${REAL[$1]}
    (($3)) && cmd=${DRY[$1]}
    export STAGE=${NAMES[$i]} STAGE_END=$2
    export LIMIT=$((STAGE_END - $(date +%s)))
    echo "== stage $STAGE: $LIMIT s" >&2
    if ((LIMIT < 1)); then
        log_line "$STAGE" "stage $STAGE (no time left)" skipped 0
        return
    fi
    timeout -s INT -k 10 $((LIMIT + 15)) bash -c "$cmd" > "$W/logs/$STAGE.log" 2>&1
    log_line "$STAGE" "stage $STAGE (limit $LIMIT s)" "$?" "$((SECONDS - start))"
}

usage() {
    sed -n '2,9p' "$SCRIPT"
    echo "stages: ${NAMES[*]}"
}

main() {
    local dry=0 list=0 all=0 want=()
    for a in "$@"; do
        case "$a" in
            --dry-run) dry=1 ;;
            --list) list=1 ;;
            -h | --help) usage; return 0 ;;
            all) all=1 ;;
            *) want+=("$a") ;;
        esac
    done
    if [[ -n "${GPU_SESSION_TABLE:-}" ]]; then
        NAMES=() SHARES=() REAL=() DRY=()
        # shellcheck disable=SC1090
        source "$GPU_SESSION_TABLE" || return 2
    fi
    ((all)) && want=("${NAMES[@]}")
    if ((list)); then
        for i in "${!NAMES[@]}"; do printf '%-10s %3s%%  %s\n' "${NAMES[$i]}" "${SHARES[$i]}" "${REAL[$i]}"; done
        return 0
    fi
    ((${#want[@]})) || { usage >&2; return 2; }
    : "${OUT:?OUT must name the output folder}"
    local idx=() i n found sum_all=0 sum_sel=0
    for i in "${!NAMES[@]}"; do sum_all=$((sum_all + SHARES[i])); done
    for n in "${want[@]}"; do
        found=""
        for i in "${!NAMES[@]}"; do [[ "${NAMES[$i]}" == "$n" ]] && found=$i; done
        [[ -n "$found" ]] || { echo "unknown stage '$n'; stages: ${NAMES[*]}" >&2; return 2; }
        idx+=("$found")
        sum_sel=$((sum_sel + SHARES[found]))
    done

    local venv_py="$REPO/.venv/bin/python"   # this checkout's venv (`make setup`) when there is one
    [[ -x $venv_py ]] || venv_py=python3
    export PY=${PY:-$venv_py}
    export DEV=cuda DW_REF DW_TINY LLM_CFG LLM_TINY REPO
    ((dry)) && DEV=cpu
    local budget=${BUDGET:-$((dry ? 120 : 540))}
    mkdir -p "$OUT" || return 2
    OUT=$(cd "$OUT" && pwd)
    export WORK=${WORK:-$(mktemp -d /tmp/gpu_session.XXXXXX)}
    export W="$WORK/gpu-results" LOG="$OUT/gpu-log.txt"
    mkdir -p "$W/logs"
    export HWPROF_CACHE_DIR="$W/cache"
    export CEIL=${CEILINGS_CACHE:-$HWPROF_CACHE_DIR/ceilings}
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    export MPLBACKEND=Agg
    if ((dry)); then
        # the device image has neither package: prove that hwprof runs without them; and one
        # thread per process, which avoids OpenMP stalls when other jobs share the CPU
        # psutil: sys.modules["psutil"] = None in a sitecustomize every Python process of the run loads,
        # so `import psutil` fails and importlib.util.find_spec returns None, as for a package that is
        # not installed (transformers probes for psutil that way and would import a shadow package);
        # platformdirs: a shadow package that raises (a None module breaks pytest's plugin loading)
        mkdir -p "$WORK/hidden/platformdirs"
        echo "raise ImportError('platformdirs is hidden by gpu_session.sh --dry-run: the device image lacks it')" \
            > "$WORK/hidden/platformdirs/__init__.py"
        printf 'import sys\nsys.modules["psutil"] = None  # hidden by gpu_session.sh --dry-run\n' \
            > "$WORK/hidden/sitecustomize.py"
        export PYTHONPATH="$WORK/hidden:$PYTHONPATH" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    fi
    cd "$REPO" || return 1

    local t0 acc=0 end lanes=${DRY_JOBS:-3}
    t0=$(date +%s)
    printf 'stage\tcommand\texit_code\tseconds\n' > "$LOG"
    {
        echo "dry_run=$dry"
        echo "budget_s=$budget"
        echo "stages=${want[*]}"
        echo "started_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "command=bash bench/gpu_session.sh $*"
        echo "git_commit=${GIT_COMMIT:-$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)}"
        echo "host=$(hostname)"
    } > "$W/session.txt"
    for i in "${idx[@]}"; do
        # shares are percent of the budget (a subset of stages shares the same part of it)
        acc=$((acc + SHARES[i]))
        end=$((t0 + budget * acc * sum_all / (sum_sel * 100)))
        if ((dry)); then
            # the dry run checks the commands, not the schedule: every stage may use what is left
            # of the budget, and the stages after those whose files others read run DRY_JOBS at a
            # time (tiny CPU work, mostly interpreter start-up; one thread each)
            end=$((t0 + budget))
            if [[ " $DRY_FIRST " != *" ${NAMES[$i]} "* ]] && ((lanes > 1)); then
                while (($(jobs -rp | wc -l) >= lanes)); do wait -n; pack; done
                run_stage "$i" "$end" "$dry" &
                continue
            fi
        fi
        run_stage "$i" "$end" "$dry"
        pack
    done
    while (($(jobs -rp | wc -l))); do wait -n; pack; done
    echo "finished_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$W/session.txt"
    pack
    cat "$LOG"
    # a dry run is a check: any command that failed (or was skipped for time) fails it; the real
    # run returns 0 whatever its stages did (the log and the archive say it)
    local failed
    failed=$(awk -F'\t' 'NR > 1 && $3 != "0"' "$LOG" | wc -l)
    if ((dry && failed)); then
        echo "dry run: $failed command(s) did not exit 0 (see $LOG and $W/logs/)" >&2
        return 1
    fi
}

main "$@"
