#!/usr/bin/env bash
# The CPU run behind results/llm/README.md: a ~100M-parameter llama-style config (hf:llama, random
# weights), generation phases at batch 1,4,16,64 (three repeats), KV-cache memory validated and --fit.
# Usage: bash bench/llm_cpu_run.sh OUT_DIR   (writes OUT_DIR/run1..3, memory_*.txt, fit.txt, commands.txt)
set -euo pipefail
OUT=${1:?usage: bench/llm_cpu_run.sh OUT_DIR}
HW=${HWPROF:-.venv/bin/hwprof}
CFG="num_hidden_layers=12,hidden_size=768,num_attention_heads=12,num_key_value_heads=4,intermediate_size=2048,vocab_size=32000,tie_word_embeddings=true"
P=${PROMPT:-128}; N=${NEW_TOKENS:-32}; REPEATS=${REPEATS:-3}
mkdir -p "$OUT"
# each command with its exit code, its duration and the load average before it (the machine is shared)
run() { echo "\$ $*" >> "$OUT/commands.txt"; echo "# load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/commands.txt"
        local t0=$SECONDS; "$@"; echo "# rc=$? $((SECONDS - t0))s" >> "$OUT/commands.txt"; }
run "$HW" ceilings --device cpu > "$OUT/ceilings.txt"
for i in $(seq 1 "$REPEATS"); do
  run "$HW" profile hf:llama --config "$CFG" --generate --prompt "$P" --new-tokens "$N" --batch 1,4,16,64 \
      --device cpu --budget 0.5 --out "$OUT/run$i" > "$OUT/run$i.txt"
done
for b in 1 16; do
  run "$HW" memory hf:llama --config "$CFG" --generate --prompt "$P" --new-tokens "$N" --batch "$b" --device cpu \
      --validate > "$OUT/memory_b$b.txt"
done
run "$HW" memory hf:llama --config "$CFG" --generate --prompt "$P" --new-tokens "$N" --device cpu --fit 16GiB \
    > "$OUT/fit.txt"
"${PYTHON:-.venv/bin/python}" bench/llm_aggregate.py "$OUT" > "$OUT/sweep_median.md"
