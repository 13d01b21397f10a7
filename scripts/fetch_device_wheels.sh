#!/usr/bin/env bash
# Fetch (here, where pip reaches PyPI) the wheels rlvr needs on the GPU machine that its image
# lacks, into .whl/ (git-ignored; the device tool carries it with `carry: [".whl"]`).
# The GPU machine's image has torch,
# transformers, accelerate, peft, safetensors, numpy, sympy, pyarrow, xxhash, msgpack, ninja,
# py-cpuinfo, psutil, einops, tqdm, ...; rlvr itself travels with the working tree (PYTHONPATH=.).
# Versions are those CI uses here. Idempotent: a wheel already in .whl/ is not fetched again, and
# a second version of a package already there is refused (two versions stop the install there).
#   scripts/fetch_device_wheels.sh         # then: du -sh .whl (keep it well under ~40 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude

WHEELS=(
  trl==1.16.0
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19          # datasets' needs missing there
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
  gguf==0.19.0                                                 # transformers reads SmolLM2's GGUF with it
  hjson==3.1.0                                                 # deepspeed's needs missing there
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
)
DEEPSPEED_WHEEL=${DEEPSPEED_WHEEL:-/tmp/dsw/deepspeed-0.19.8-py3-none-any.whl}  # built here with DS_BUILD_OPS=0

norm() { echo "$1" | tr 'A-Z-.' 'a-z__'; }   # wheel file names use lowercase-ish, '_' for '-' and '.'

have() {  # have NAME -> prints the wheel already in .whl/ for NAME (any version), if one
  local want; want=$(norm "$1")
  for f in .whl/*.whl; do
    [ -e "$f" ] || continue
    local base; base=$(basename "$f"); base=${base%%-[0-9]*}
    [ "$(norm "$base")" = "$want" ] && { echo "$f"; return 0; }
  done
  return 1
}

for spec in "${WHEELS[@]}"; do
  name=${spec%%==*}; version=${spec##*==}
  if existing=$(have "$name"); then
    case $(basename "$existing") in
      *-"$version"-*) echo "have $existing" ;;
      *) echo "ERROR: $existing is another version of $name than $version; keep one" >&2; exit 1 ;;
    esac
    continue
  fi
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
  echo "got $spec"
done

if ! have deepspeed >/dev/null; then
  [ -f "$DEEPSPEED_WHEEL" ] || { echo "ERROR: no DeepSpeed wheel at $DEEPSPEED_WHEEL (build one: DS_BUILD_OPS=0 pip wheel deepspeed==0.19.8 --no-deps -w /tmp/dsw)" >&2; exit 1; }
  cp "$DEEPSPEED_WHEEL" .whl/
  echo "got $(basename "$DEEPSPEED_WHEEL")"
fi
ls .whl
du -sh .whl
