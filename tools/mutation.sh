#!/usr/bin/env bash
# Mutation score of the maths modules (distributions, priors, bounds, the model, transforms) against the unit
# tests named in pyproject.toml [tool.mutmut]; prints mutmut's counts and the score. Not part of CI's run:
# about 15 minutes on 2 CPU cores. Re-running continues where the last run stopped (mutants/ is a cache).
#   bash tools/mutation.sh [--max-children N]
set -euo pipefail
cd "$(dirname "$0")/.."
pip install --quiet "mutmut==3.8.1"
# mutmut forks a worker per mutant from a process that has run torch; a forked child whose parent used
# OpenMP's thread pool can hang (libgomp is not fork-safe): one thread each, or mutants "time out" at random.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mutmut run "${@:---max-children=2}" || true
mutmut results --all true > mutants/results.txt || true
python - <<'PY'
import collections, re
counts = collections.Counter(re.findall(r": ([\w ]+)$", open("mutants/results.txt").read(), re.M))
killed = counts["killed"] + counts["timeout"]
total = killed + counts["survived"] + counts["no tests"] + counts["suspicious"]
print(dict(counts))
print(f"mutation score: {killed}/{total} = {100 * killed / max(total, 1):.1f}% killed")
PY
