#!/bin/sh
# Rebuild docs/report.png: 30 trials of a synthetic objective (bench.py) on the `none` host, the
# shipped-profile and re-run trials ostune adds by itself, `ostune verify`, then `ostune report`
# and a headless-Chromium screenshot of it. Needs chromium (Debian package) and matplotlib.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)
cd "$repo"
"$python" -m tuner.cli run --app command --host none --space "$here/space.yaml" \
  --command "$python $here/bench.py" --experiment demo-nightly --db "sqlite:///$work/demo.db" \
  --seed 11 --repetitions 5 --max-trials 30 --quiet || [ $? -eq 7 ]
"$python" -m tuner.cli verify demo-nightly --db "sqlite:///$work/demo.db" --rounds 5 >/dev/null
"$python" -m tuner.cli report demo-nightly --db "sqlite:///$work/demo.db" --output "$work/report.html"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$(mktemp -d)" --screenshot="$repo/docs/report.png" \
  --window-size=1200,1800 "file://$work/report.html" 2>/dev/null
echo "wrote $repo/docs/report.png (report: $work/report.html)"
