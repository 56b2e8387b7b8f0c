#!/usr/bin/env bash
# One-shot GPU recipe (issue 14): on a CUDA machine whose Python has torch, transformers, accelerate, timm and
# safetensors, install the rest from the wheelhouse carried in the working tree, train the encoder's binding stage
# (from the bundled encoder; both towers), then on the new encoder the generator's prior and decoder (on the
# bundled VAE) and the VLM, from GPU recipes, evaluate the new models, run the CUDA-only tests and the fp16
# benchmarks, and leave the new bundle with every table and log in one folder, with a summary. Nine minutes at most.
#
#   scripts/gpu_train.sh --build-wheels                # here: fill .whl/ (see WHEELS) and print the sizes
#   scripts/gpu_train.sh --out /tmp/gpu --pack "$OUT"  # on the device: the run tool, carry=[".whl"]
#   scripts/gpu_train.sh --tiny --out /tmp/tiny        # the same steps with tiny recipes, on a CPU (the test's)
#   scripts/gpu_train.sh [--tiny] --plan               # the step budgets, checked to add up; nothing runs
#
# The output folder (--out, default runs/gpu): bundle/clip, bundle/diffusion and bundle/vlm (the new encoder,
# generator and VLM; the generator's generator.json and the VLM's config.json name the encoder by the path they
# were trained with, so load them with --encoder bundle/clip, or serve the bundle folder as a preset), recipes/
# (what ran), logs/<step>.log, eval/ (scores, JSON and markdown), bench/ (benchmark tables), tests/ (the CUDA tests'
# JUnit XML), work/ (checkpoints, sample grids), steps.tsv, summary.json and summary.md (every step: status, exit
# code, seconds, budget). --pack DIR also writes six files to DIR, within the device tool's limits on what comes
# back (8 files, 16 MiB each): summary.md, summary.json, bundle-clip.tar.gz, bundle-diffusion.tar.gz,
# bundle-vlm.tar.gz, reports.tar.gz.
#
# Every step runs under `timeout` with its budget (BUDGET below, seconds), capped by one deadline, so the run ends
# in time; a step that fails or times out is recorded and the steps that do not need it still run. Each training
# part runs a short first chunk, is sized to its budget from that chunk's pace (scripts/gpu_recipes.py size), runs
# the rest, and, if its timeout cuts it off, is exported from its last checkpoint (finalize). If the encoder does
# not come out, the prior and the decoder train on the bundled encoder and the bundled VLM stands (not retrained:
# it reads the encoder's patch tokens, and the bundled ones are what it was trained on).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER=$ROOT/scripts/gpu_recipes.py
PY=${PYTHON:-python3}  # on the device, python3 is the interpreter that holds torch
# The wheelhouse: ignored by git (.gitignore), so the device tool carries it only when named in `carry`. It holds
# what our package needs beyond the device image (KINDS.md's package list for nvidia-h200, 2026-11-17): the closure
# of pyproject's dependencies installed in .venv, less what the image has and less huggingface_hub 2.x's own needs
# (the image's huggingface_hub 1.33 satisfies diffusers, gradio and open_clip). Pinned to the versions installed here.
WHEELS=$ROOT/.whl
WHEEL_PACKAGES=(
  diffusers open_clip_torch ftfy wcwidth importlib_metadata lazy-importer
  gradio gradio_client hf-gradio fastapi starlette uvicorn pydantic pydantic_core annotated-types typing-inspection
  opentelemetry-api orjson brotli pydub python-multipart pytz tzdata safehttpx semantic-version tomlkit groovy
)
DEVICE_PYTHON=3.12  # the device's python3 (KINDS.md)
TREE_LIMIT_MIB=64   # the device tool's limit on the working tree plus carried paths

MODE=gpu OUTDIR= PACK= NOTE= PLAN=0
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --build-wheels) MODE=wheels ;;
    --tiny | --dry-run) MODE=tiny ;;
    --out) OUTDIR=$2; shift ;;
    --pack) PACK=$2; shift ;;
    --plan) PLAN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_train.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# ---------------------------------------------------------------------- --build-wheels (here, with network)
if [[ $MODE == wheels ]]; then
  mkdir -p "$WHEELS"
  rm -f "$WHEELS"/*.whl  # one version of each package: two would stop the install there
  specs=()
  for name in "${WHEEL_PACKAGES[@]}"; do
    version=$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    specs+=("$name==$version")
  done
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
    "${platforms[@]}" -d "$WHEELS" "${specs[@]}"
  $PY "$HELPER" slim-wheel "$WHEELS"/gradio-[0-9]*.whl
  echo "wheelhouse $WHEELS (${#specs[@]} wheels):"
  ls -l "$WHEELS"/*.whl | awk '{printf "  %8.2f MiB  %s\n", $5 / 1048576, $NF}' | sed "s|$WHEELS/||"
  wheels=$(cat "$WHEELS"/*.whl | wc -c)
  tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  awk -v w="$wheels" -v t="$tree" -v lim="$TREE_LIMIT_MIB" 'BEGIN {
    printf "wheels %.1f MiB + working tree %.1f MiB = %.1f MiB of the device tool'"'"'s %d MiB\n", w/2^20, t/2^20, (w+t)/2^20, lim
    if ((w + t) / 2^20 > lim) { print "over the limit: the device tool would refuse this tree"; exit 1 } }'
  exit 0
fi

# ---------------------------------------------------------------------- plan: budgets (seconds) and sizes
declare -A BUDGET FIRST
if [[ $MODE == gpu ]]; then
  # Lanes run side by side (the GPU is mostly idle: these models are CPU-bound, see gpu_recipes.py). The binding
  # stage trains both towers, so whatever reads the encoder waits for it: first the encoder alone (A), then on
  # the new encoder the prior, the decoder and the VLM side by side, with eval_clip beside them; from the start,
  # beside all of it, C = the CUDA tests, then the memory benchmark (peak memory, not speed). After training, the
  # generator's export and eval_diffusion, with eval_vlm beside them (untimed); the timed benchmarks run alone.
  # Install (27 wheels and the editable checkout: 5 s on CPython 3.12 here), prepare and export are short and
  # given little; training gets what the rest leaves (260 s: 100 for the encoder, then 160 for each of the three).
  TOTAL=540
  BUDGET=([install]=25 [prepare]=10 [encoder]=100 [eval_clip]=100 [prior]=160 [decoder]=160 [vlm]=160
    [cuda_tests]=90 [bench_memory]=100 [export]=25 [eval_diffusion]=75 [eval_vlm]=60 [bench_classify]=25
    [bench_vlm]=40 [bench_diffusion]=60 [pack]=10)
  # steps of each part's first (pace-measuring) chunk; the VLM's is its projector stage (gpu_recipes.py VLM_GPU)
  FIRST=([binding]=100 [prior]=80 [decoder]=150 [vlm]=100)
  RESERVE=25  # seconds kept back in each part for a finalize run (start-up + export)
  cpus=$(nproc)
  W_ENC=$((cpus * 3 / 4)) W_PRIOR=3 W_DEC=3 W_VLM=3  # the encoder alone, then three parts on 12 of 16 cores
  EVAL_CLIP=(--count 1000)
  EVAL_DIFFUSION=(--count 50 --images 4)
  EVAL_VLM=(--count 500)  # 14 generations a scene (captions, six question types, two splits)
  DTYPE=(--dtype fp16)
  BENCH_CLASSIFY=()
  BENCH_VLM=(--no-compile)  # the torch.compile'd row's compile alone could take the step's budget
  BENCH_DIFFUSION=(--score-count 10)
else
  TOTAL=900
  BUDGET=([install]=60 [prepare]=30 [encoder]=150 [eval_clip]=90 [prior]=250 [decoder]=250 [vlm]=250
    [cuda_tests]=150 [bench_memory]=0 [export]=60 [eval_diffusion]=90 [eval_vlm]=120 [bench_classify]=60
    [bench_vlm]=60 [bench_diffusion]=60 [pack]=30)
  # the decoder and the VLM (its projector stage) alone are sized from a first chunk (saves start-ups)
  FIRST=([binding]=4 [prior]=4 [decoder]=2 [vlm]=2)
  RESERVE=60
  W_ENC=0 W_PRIOR=0 W_DEC=0 W_VLM=0
  EVAL_CLIP=(--count 8)
  EVAL_DIFFUSION=(--count 1 --images 4 --steps 4)
  EVAL_VLM=(--count 4)
  DTYPE=()
  BENCH_CLASSIFY=(--batch-size 8 --labels 4 --repeats 1)
  BENCH_VLM=(--batch-sizes 1 --new-tokens 4 --repeats 1 --no-compile)
  BENCH_DIFFUSION=(--batch-size 1 --steps 2 --fast-steps 2 --score-count 0 --repeats 1)
fi
b() { echo "${BUDGET[$1]}"; }
max() { local m=$1 x; for x; do ((x > m)) && m=$x; done; echo "$m"; }
# lane A: the encoder, then the three parts and eval_clip side by side; lane C beside it from the start
training=$(max $(($(b encoder) + $(max "$(b prior)" "$(b decoder)" "$(b vlm)" "$(b eval_clip)"))) \
  $(($(b cuda_tests) + $(b bench_memory))))
evaluation=$(max $(($(b export) + $(b eval_diffusion))) "$(b eval_vlm)")
planned=$(($(b install) + $(b prepare) + training + evaluation + $(b bench_classify) + $(b bench_vlm) +
  $(b bench_diffusion) + $(b pack)))
SLACK=10  # for timeout's kill-after and the summaries
if ((planned + SLACK > TOTAL)); then
  echo "gpu_train.sh: the budgets add up to ${planned} s, over ${TOTAL} s less ${SLACK} s of slack" >&2
  exit 2
fi
DEADLINE=$((TOTAL - SLACK - $(b pack)))  # in $SECONDS since the start; the pack step may use the rest
if ((PLAN)); then  # --plan: the budgets, checked, and nothing run
  for step in "${!BUDGET[@]}"; do printf '%-16s %4d s\n' "$step" "${BUDGET[$step]}"; done | sort
  echo "$MODE: ${planned} s planned of ${TOTAL} s; training lanes ${training} s, evaluation ${evaluation} s"
  exit 0
fi

OUTDIR=$(mkdir -p "${OUTDIR:-$ROOT/runs/gpu}" && cd "${OUTDIR:-$ROOT/runs/gpu}" && pwd)
[[ -z $PACK ]] || PACK=$(mkdir -p "$PACK" && cd "$PACK" && pwd)
LOGS=$OUTDIR/logs RECIPES=$OUTDIR/recipes WORK=$OUTDIR/work BUNDLE=$OUTDIR/bundle
rm -rf "$LOGS" "$RECIPES" "$WORK" "$BUNDLE" "$OUTDIR"/{eval,bench,tests} "$OUTDIR"/steps.tsv "$OUTDIR"/summary.*
mkdir -p "$LOGS" "$RECIPES" "$WORK" "$BUNDLE" "$OUTDIR"/{eval,bench,tests}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export ROOT PY HELPER WHEELS MODE OUTDIR PACK LOGS RECIPES WORK BUNDLE  # for the steps that are bash -c functions
cd "$ROOT"
echo "[gpu_train] $MODE run into $OUTDIR: budgets add up to ${planned} s of ${TOTAL} s (training lanes ${training} s)"

# ---------------------------------------------------------------------- steps and their record
record() {  # NAME STATUS RC SECONDS BUDGET NOTE: one line of steps.tsv (short lines, appended whole by each lane)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUTDIR/steps.tsv"
}
skip() {  # NAME REASON
  record "$1" skipped - 0 0 "$2"
  echo "[gpu_train] $1: skipped ($2)"
}
since() {  # seconds since the $EPOCHREALTIME given, to the millisecond
  local now=${EPOCHREALTIME//[.,]/} then=${1//[.,]/}
  local us=$((10#$now - 10#$then))
  printf '%d.%03d' $((us / 1000000)) $((us / 1000 % 1000))
}
run_step() {  # NAME BUDGET CMD...: CMD under timeout (the budget capped by the deadline), output in logs/NAME.log;
  # returns CMD's exit code. NOTE (the environment) goes into the record.
  local name=$1 budget=$2 rc=0 t0=$EPOCHREALTIME status
  shift 2
  local left=$((DEADLINE - SECONDS))
  if ((budget > left)); then budget=$left; fi
  if ((budget < 1)); then
    skip "$name" "no time left before the deadline"
    return 124
  fi
  echo "[gpu_train] $name: starts, ${budget} s at most"
  timeout -k 5 "$budget" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  if ((rc == 0)); then status=ok; elif ((rc == 124 || rc == 137)); then status=timeout; else status=failed; fi
  record "$name" "$status" "$rc" "$(since "$t0")" "$budget" "${NOTE:-}"
  echo "[gpu_train] $name: $status (exit $rc) after $(since "$t0") s"
  return "$rc"
}
skip_part() {  # NAME REASON: a training part that cannot start, recorded in full
  for chunk in first rest finalize; do skip "$1_$chunk" "$2"; done
}
has_checkpoint() { [[ -f $1/state.json || -f $1.previous/state.json ]]; }

train_part() {  # NAME BUDGET DONE CHECKPOINT RECIPE STAGE CMD...: a training part, time-boxed (see the header)
  local name=$1 budget=$2 done=$3 ckpt=$4 recipe=$5 stage=$6 rc=0
  shift 6
  local start=$SECONDS end=$((SECONDS + budget))
  run_step "${name}_first" $((budget - RESERVE)) "$@" --stop-after "${FIRST[$stage]}" || rc=$?
  if [[ -e $done ]]; then
    skip "${name}_rest" "finished in the first chunk"
  elif ((rc != 0 && rc != 124 && rc != 137)); then
    skip "${name}_rest" "the first chunk failed (exit $rc)"
  else
    $PY "$HELPER" size --recipe "$recipe" --stage "$stage" --checkpoint "$ckpt" --wall $((SECONDS - start)) \
      --left $((end - SECONDS - RESERVE)) >"$LOGS/${name}_size.txt" 2>&1 || true
    NOTE=$(tail -n 1 "$LOGS/${name}_size.txt") run_step "${name}_rest" $((end - SECONDS - RESERVE)) "$@" || true
  fi
  if [[ -e $done ]]; then
    skip "${name}_finalize" "not needed"
  elif ! has_checkpoint "$ckpt"; then
    skip "${name}_finalize" "no checkpoint to export"
  elif $PY "$HELPER" finalize --recipe "$recipe" --stage "$stage" --checkpoint "$ckpt" >"$LOGS/${name}_finalize.txt" 2>&1
  then
    NOTE=$(tail -n 1 "$LOGS/${name}_finalize.txt") run_step "${name}_finalize" $((end - SECONDS)) "$@" || true
  else
    skip "${name}_finalize" "$(tail -n 1 "$LOGS/${name}_finalize.txt")"
  fi
  [[ -e $done ]]
}

table() {  # LOG OUT: the markdown table a benchmark printed
  grep '^|' "$1" >"$2" || true
}

# ---------------------------------------------------------------------- 1. install
install_packages() {  # into the interpreter's environment, else (read-only) into work/site on PYTHONPATH
  local pip=("$PY" -m pip install --no-index --no-deps --no-compile --find-links "$WHEELS")
  if ! "${pip[@]}" "$WHEELS"/*.whl; then
    echo "installing into $WORK/site instead"
    "${pip[@]}" --target "$WORK/site" "$WHEELS"/*.whl || return
  fi
  if ! "${pip[@]}" --no-build-isolation -e "$ROOT"; then
    echo "the editable install failed: the checkout is imported through $WORK/src instead"
  fi
  $PY -m pip check || true  # conflicts are reported, not fatal: the image's own pins are not ours
}
FIND="import importlib.util as u; missing = [m for m in ('diffusers', 'open_clip', 'ftfy', 'gradio', 'gradio_client',
  'triptych.clip') if u.find_spec(m) is None]; print('missing:', *missing); exit(1 if missing else 0)"
if $PY -c "$FIND" >/dev/null 2>&1; then
  NOTE="already importable: nothing installed" run_step install "$(b install)" $PY -c "$FIND" || true
elif compgen -G "$WHEELS/*.whl" >/dev/null; then
  run_step install "$(b install)" bash -c "$(declare -f install_packages); install_packages" || true
else
  skip install "no wheels in $WHEELS (run scripts/gpu_train.sh --build-wheels here and carry .whl)"
fi
if [[ -d $WORK/site ]]; then
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import importlib.util as u; exit(u.find_spec('triptych.clip') is None)" 2>/dev/null; then
  # Not installed: the package maps triptych.<part> to top-level folders (pyproject's package-dir), so mirror that
  # with links. PYTHONSAFEPATH (Python >= 3.11) keeps the checkout's own triptych/ (the current folder) from
  # shadowing the mirror; the checkout comes after it on the path for `tests`.
  mkdir -p "$WORK/src/triptych"
  ln -sf "$ROOT"/triptych/* "$WORK/src/triptych/"
  for part in core world clip vlm diffusion apps weights; do ln -sfn "$ROOT/$part" "$WORK/src/triptych/$part"; done
  export PYTHONSAFEPATH=1 PYTHONPATH=$WORK/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi

# ---------------------------------------------------------------------- 2. recipes and the VAE seed
prepare() {
  $PY "$HELPER" recipes --mode "$MODE" --dir "$RECIPES" --encoder "$BUNDLE/clip" &&
    $PY "$HELPER" seed --workdir "$WORK/diffusion"
}
run_step prepare "$(b prepare)" bash -c "$(declare -f prepare); prepare" || true
echo "$ROOT/weights/shapes/clip" >"$WORK/encoder.txt"  # until the new one is exported

# ---------------------------------------------------------------------- 3. training, in lanes
GRID=$WORK/diffusion/finished/grid/grid_projection.safetensors VAE=$WORK/diffusion/finished/vae.json
lane_prior() {  # ENCODER
  if [[ -f $RECIPES/prior.json && -f $VAE ]]; then
    # the decoder lane fits the grid (on the same encoder) first; the wait comes out of the prior's budget
    local t0=$SECONDS
    if [[ -f $RECIPES/decoder.json ]]; then
      for _ in $(seq $(($(b prior) / 2))); do [[ -f $GRID ]] && break || sleep 1; done
    fi
    NOTE="encoder $1" train_part prior $(($(b prior) - (SECONDS - t0))) "$WORK/diffusion/finished/prior.json" \
      "$WORK/diffusion/prior/checkpoint" "$RECIPES/prior.json" prior $PY -m triptych.diffusion.train \
      --recipe "$RECIPES/prior.json" --out "$BUNDLE/diffusion" --workdir "$WORK/diffusion" --parts prior \
      --workers "$W_PRIOR" || true
  else
    skip_part prior "no recipe or no VAE (the prepare step failed)"
  fi
}
lane_decoder() {  # ENCODER
  if [[ -f $RECIPES/decoder.json && -f $VAE ]]; then
    NOTE="encoder $1" train_part decoder "$(b decoder)" "$WORK/diffusion/finished/decoder.json" \
      "$WORK/diffusion/decoder/checkpoint" "$RECIPES/decoder.json" decoder $PY -m triptych.diffusion.train \
      --recipe "$RECIPES/decoder.json" --out "$BUNDLE/diffusion" --workdir "$WORK/diffusion" --parts decoder \
      --workers "$W_DEC" || true
  else
    skip_part decoder "no recipe or no VAE (the prepare step failed)"
  fi
}
lane_vlm() {  # ENCODER: only the new one (the bundled VLM already reads the bundled encoder)
  if [[ $1 != "$BUNDLE/clip" ]]; then
    skip_part vlm "no new encoder: the bundled VLM stands"
  elif [[ -f $RECIPES/vlm.json ]]; then
    NOTE="encoder $1" train_part vlm "$(b vlm)" "$BUNDLE/vlm/manifest.json" "$WORK/vlm/checkpoint" \
      "$RECIPES/vlm.json" vlm $PY -m triptych.vlm.train --recipe "$RECIPES/vlm.json" --encoder "$1" \
      --out "$BUNDLE/vlm" --workdir "$WORK/vlm" --workers "$W_VLM" || true
  else
    skip_part vlm "no recipe (the prepare step failed)"
  fi
}
lane_training() {  # A: the encoder alone, then on it the prior, the decoder, the VLM and eval_clip side by side
  local encoder=$BUNDLE/clip
  if [[ -f $RECIPES/clip.json ]]; then
    train_part encoder "$(b encoder)" "$encoder/manifest.json" "$WORK/clip/binding/checkpoint" "$RECIPES/clip.json" \
      binding $PY -m triptych.clip.train --init "$ROOT/weights/shapes/clip" --recipe "$RECIPES/clip.json" \
      --out "$encoder" --workdir "$WORK/clip" --workers "$W_ENC" || true
  else
    skip_part encoder "no recipe (the prepare step failed)"
  fi
  if [[ -f $encoder/manifest.json ]]; then
    echo "$encoder" >"$WORK/encoder.txt"
    run_step eval_clip "$(b eval_clip)" $PY -m triptych.apps.evaluation.main clip --model "$encoder" \
      "${EVAL_CLIP[@]}" --json "$OUTDIR/eval/clip.json" --markdown "$OUTDIR/eval/clip.md" &
  else
    skip eval_clip "no new encoder"
    encoder=$ROOT/weights/shapes/clip  # the generator trains on the bundled one instead (summary notes it)
  fi
  for part in prior decoder; do  # named the new encoder by `recipes`; the bundled one when it did not come out
    if [[ -f $RECIPES/$part.json ]]; then
      $PY "$HELPER" use-encoder --recipe "$RECIPES/$part.json" --encoder "$encoder" >/dev/null || true
    fi
  done
  lane_prior "$encoder" &
  lane_decoder "$encoder" &
  lane_vlm "$encoder" &
  wait
}
lane_tests_memory() {  # C
  # the CUDA-only tests: every test named *cuda* in the files that skip without CUDA (they skip on a CPU)
  local files
  mapfile -t files < <(grep -l "cuda.is_available()" tests/test_*.py)
  run_step cuda_tests "$(b cuda_tests)" $PY -m pytest -q -p no:cacheprovider "${files[@]}" -k cuda -rs \
    --junitxml "$OUTDIR/tests/cuda_tests.xml" || true
  if (($(b bench_memory) > 0)); then
    run_step bench_memory "$(b bench_memory)" $PY -m triptych.apps.benchmarks.main memory --preset shapes \
      "${DTYPE[@]}" || true
    table "$LOGS/bench_memory.log" "$OUTDIR/bench/memory.md"
  else
    skip bench_memory "tiny run: four full app processes would take minutes on a CPU"
  fi
}
lane_training &
lane_tests_memory &
wait
ENCODER=$(cat "$WORK/encoder.txt")

# ---------------------------------------------------------------------- 4. export, evaluation, benchmarks
export GENERATOR=$BUNDLE/diffusion CAPTIONER=$BUNDLE/vlm
export_generator() {  # the export's recipe: the prior's with the decoder's section (one encoder, both)
  $PY "$HELPER" merge --prior "$RECIPES/prior.json" --decoder "$RECIPES/decoder.json" --out "$RECIPES/diffusion.json" &&
    $PY -m triptych.diffusion.train --recipe "$RECIPES/diffusion.json" --out "$GENERATOR" --workdir "$WORK/diffusion" \
      --parts prior decoder
}
lane_generator() {  # the export, then its evaluation
  if [[ -f $WORK/diffusion/finished/prior.json && -f $WORK/diffusion/finished/decoder.json ]]; then
    NOTE="encoder $ENCODER" run_step export "$(b export)" bash -c "$(declare -f export_generator); export_generator" ||
      true
  else
    skip export "the prior or the decoder did not finish"
  fi
  if [[ -f $GENERATOR/manifest.json ]]; then
    run_step eval_diffusion "$(b eval_diffusion)" $PY -m triptych.apps.evaluation.main diffusion \
      --model "$GENERATOR" --encoder "$ENCODER" "${EVAL_DIFFUSION[@]}" --json "$OUTDIR/eval/diffusion.json" \
      --markdown "$OUTDIR/eval/diffusion.md" || true
  else
    skip eval_diffusion "no new generator"
  fi
}
lane_captioner() {  # beside it: the new VLM's evaluation
  if [[ -f $CAPTIONER/manifest.json ]]; then
    run_step eval_vlm "$(b eval_vlm)" $PY -m triptych.apps.evaluation.main vlm --model "$CAPTIONER" \
      --encoder "$ENCODER" "${EVAL_VLM[@]}" --json "$OUTDIR/eval/vlm.json" --markdown "$OUTDIR/eval/vlm.md" || true
  else
    skip eval_vlm "no new VLM"
  fi
}
lane_generator &
lane_captioner &
wait
bench() {  # NAME ARGS...: `triptych-benchmark NAME ARGS...`, its table also in bench/NAME.md
  local name=$1
  shift
  run_step "bench_$name" "$(b "bench_$name")" $PY -m triptych.apps.benchmarks.main "$name" "$@" || true
  table "$LOGS/bench_$name.log" "$OUTDIR/bench/$name.md"
}
# timed, so one at a time with nothing beside them: the new encoder, VLM and generator (or the bundled ones, when
# they did not come out)
BENCH_GENERATOR=(--model shapes) BENCH_CAPTIONER=(--model shapes) GENERATOR_NOTE="the bundled generator"
CAPTIONER_NOTE="the bundled VLM"
if [[ -f $GENERATOR/manifest.json ]]; then
  BENCH_GENERATOR=(--model "$GENERATOR" --encoder "$ENCODER") GENERATOR_NOTE="the new generator"
fi
if [[ -f $CAPTIONER/manifest.json ]]; then
  BENCH_CAPTIONER=(--model "$CAPTIONER" --encoder "$ENCODER") CAPTIONER_NOTE="the new VLM"
fi
NOTE="encoder $ENCODER" bench classify --model "$ENCODER" "${BENCH_CLASSIFY[@]}" "${DTYPE[@]}"
NOTE=$CAPTIONER_NOTE bench vlm "${BENCH_CAPTIONER[@]}" "${BENCH_VLM[@]}" "${DTYPE[@]}"
NOTE=$GENERATOR_NOTE bench diffusion "${BENCH_GENERATOR[@]}" "${BENCH_DIFFUSION[@]}" "${DTYPE[@]}"

# ---------------------------------------------------------------------- 5. summary (and the pack)
summarize() {
  $PY "$HELPER" summary --out "$OUTDIR" --mode "$MODE" --wall "$SECONDS" --budget "$TOTAL" >"$LOGS/summary.log" 2>&1 ||
    echo "[gpu_train] the summary failed: see $LOGS/summary.log"
}
pack() {
  local dest=$PACK
  mkdir -p "$dest"
  for part in clip diffusion vlm; do
    [[ -d $BUNDLE/$part ]] && tar -C "$BUNDLE" -czf "$dest/bundle-$part.tar.gz" "$part"
  done
  (cd "$OUTDIR" && tar -czf "$dest/reports.tar.gz" steps.tsv recipes logs eval bench tests \
    $(find work -path '*/samples/*' -type f 2>/dev/null | sort))
  local big
  big=$(find "$dest" -type f -size +16M)
  [[ -z $big ]] || { echo "over the device tool's 16 MiB a file: $big"; return 1; }
}
summarize
if [[ -n $PACK ]]; then
  DEADLINE=$((TOTAL - SLACK / 2)) run_step pack "$(b pack)" bash -c "$(declare -f pack); pack" || true
  summarize
  cp "$OUTDIR/summary.json" "$OUTDIR/summary.md" "$PACK/"
fi
cat "$OUTDIR/summary.md"
echo "[gpu_train] done in ${SECONDS} s: $OUTDIR"
