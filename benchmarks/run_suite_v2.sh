#!/usr/bin/env bash
# The regime suite v2 (issue 31) and issue 33's designs, on both cores: two processes at one thread
# each take unfinished cases in turn (claims in the records folder), each case run to its end, and
# start only cases expected to end before FINISH_BY (HH:MM, default: in 2 h 40 min). A case's
# record (benchmarks/results/bench_regimes_v2/) is what survives; the cache under
# benchmarks/results/scratch/ does not outlive a session's fresh clone, so commit the records
# before the session ends. Run it again to go on; it skips finished cases.
#
#   benchmarks/run_suite_v2.sh                 # the suite + designs, until 2 h 40 min from now
#   FINISH_BY=03:05 benchmarks/run_suite_v2.sh
#   tail -f benchmarks/results/scratch/suite_w1.log
set -euo pipefail
cd "$(dirname "$0")/.."
FINISH_BY=${FINISH_BY:-$(date -d '+160 min' +%H:%M)}
CONTROLLERS=${CONTROLLERS:-bounded,bounded_short,late_probe}
XQUAD=${XQUAD:-../shared/data/xquad}
SUMMARIES=${SUMMARIES:-../shared/data/summaries}
mkdir -p benchmarks/results/scratch
for w in 1 2; do
  OMP_NUM_THREADS=1 nohup .venv/bin/python -m benchmarks.bench_regimes --suite v2 --phase all \
    --controllers "$CONTROLLERS" --finish-by "$FINISH_BY" --threads 1 --quiet \
    --data "$XQUAD" --summaries-data "$SUMMARIES" > "benchmarks/results/scratch/suite_w$w.log" 2>&1 &
  echo "worker $w: pid $! (log benchmarks/results/scratch/suite_w$w.log), finishing by $FINISH_BY"
  sleep 15  # the second worker claims the next case, not the first one's
done
