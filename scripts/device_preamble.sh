# Sourced by the device scripts: run from the repository root on a GPU machine that has only its
# own torch (no network). Installs the wheels it lacks from .whl/ (vizdoom, gymnasium, tyro and
# their small dependencies, downloaded beforehand with pip download --only-binary=:all:
# --python-version 3.12 ...) and puts this checkout on PYTHONPATH; writes machine.txt into $OUT.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
mkdir -p "$OUT"
if ! python3 -c "import vizdoom, gymnasium, tyro" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$HOME/pysite" .whl/*.whl || exit 1
    export PYTHONPATH="$HOME/pysite"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; echo "cpu cores: $(nproc)"; python3 --version; \
  python3 -c "import torch; print('torch', torch.__version__)"; free -g | head -2; } > "$OUT/machine.txt"
