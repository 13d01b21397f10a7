#!/usr/bin/env bash
# Unpacks the code of an earlier commit into ./ab_base (untracked) for same-call A/B runs on the
# device (`scripts/device_run.sh base:PART`), with ab_base/.commit naming it: device_run.sh checks
# that stamp, so a stale tree left on the device machine cannot pass for the one asked for.
#   scripts/make_ab_base.sh REV
set -euo pipefail
rev=$(git rev-parse --short "${1:?usage: scripts/make_ab_base.sh REV}")
rm -rf ab_base && mkdir ab_base
git archive "$rev" rlvr benchmarks scripts ':!benchmarks/results' | tar -x -C ab_base
echo "$rev" > ab_base/.commit
echo "ab_base: $rev"
