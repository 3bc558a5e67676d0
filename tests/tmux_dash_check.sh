#!/usr/bin/env bash
# Drive `heur tui` in a real terminal (tmux, xterm-256color) at 80x24 and at 120x40 over runs
# that really trained (tests/fixtures_tui/make_real.py), and read the screen as a person would:
# the legend of 12 runs, seeds grouped as mean ± sd, a pinned baseline from another experiment,
# round tick labels, a diverged run cut from the loss panel and named, the sharpness edge, the
# system panel, and a toast held back while a dialog is open.
#   tests/tmux_dash_check.sh          KEEP=1 tests/tmux_dash_check.sh (leave the session)
set -eu

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
HEUR="${HEUR:-$ROOT/.venv/bin/heur}"
[ -x "$HEUR" ] || HEUR=heur
WORK="$(mktemp -d)"
SESSION="heur-dash-check-$$"
TMUX_CMD=(tmux -L "$SESSION")

cleanup() {
  if [ -z "${KEEP:-}" ]; then
    "${TMUX_CMD[@]}" kill-server 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

"$PY" "$ROOT/tests/fixtures_tui/make_real.py" "$WORK" >/dev/null

screen() { "${TMUX_CMD[@]}" capture-pane -p -t "$SESSION"; }
fail() {
  echo "FAIL ($SIZE): $1" >&2
  echo "----- screen -----" >&2
  screen >&2
  exit 1
}
wait_for() {
  local text="$1" limit="${2:-20}" t=0
  while ! grep -qF -- "$text" <<<"$(screen)"; do
    sleep 0.25
    t=$((t + 1))
    if [ "$t" -ge $((limit * 4)) ]; then fail "did not see '$text'"; fi
  done
}
keys() { "${TMUX_CMD[@]}" send-keys -t "$SESSION" "$@"; sleep 0.5; }
# the x tick labels under the plot: round numbers, at least two spaces apart (never "0.00015.0")
ticks_ok() {
  local line
  line="$(screen | grep -A1 -E '└[┬─]+┘' | tail -n 1 | sed 's/.*▕//')"
  [ -n "$line" ] || fail "no tick line"
  grep -qE '[0-9]  +[0-9]' <<<"$line" || fail "tick labels too close: '$line'"
  if grep -qE '[0-9]\.[0-9]+\.[0-9]' <<<"$line"; then fail "tick labels collide: '$line'"; fi
}

for SIZE in 80x24 120x40; do
  W="${SIZE%x*}"; H="${SIZE#*x}"
  if [ "$SIZE" != 80x24 ]; then "${TMUX_CMD[@]}" kill-server 2>/dev/null || true; sleep 1; fi
  "${TMUX_CMD[@]}" new-session -d -s "$SESSION" -x "$W" -y "$H" \
    "cd '$WORK' && TERM=xterm-256color TZ=UTC '$HEUR' tui --runs-dir runs --presets-dir none; sleep 5"

  # opens on the most recent experiment: 12 runs overlaid, a legend that fits
  wait_for "Experiments (3)"
  wait_for "lr=0.02_seed=0"
  wait_for "loss: train"
  ticks_ok
  if [ "$W" = 80 ]; then wait_for "more (L: all)"; fi
  keys L; wait_for "Legend"; wait_for "lr=0.3_seed=3"
  keys Escape; sleep 0.3

  # g: the seeds of each lr as one mean line with a ± sd band
  keys g
  wait_for "mean ± sd over seeds"
  wait_for "lr=0.1 (4)"
  wait_for "group=seeds"
  if grep -q "more (L: all)" <<<"$(screen)"; then fail "3 groups should fit the legend"; fi
  ticks_ok
  keys g; keys g  # by optim.lr, then lines again

  # pin the baseline of the other experiment, come back: it is in the legend with ⊙
  keys End; sleep 0.3   # the last node: the older experiment "base"
  wait_for "completed base"
  keys Enter; keys Down
  keys P
  wait_for "pinned: base"
  keys Up; keys Up; sleep 0.5   # "edge": the diverged run is cut from the loss panel, and named
  wait_for "diverged edge"
  wait_for "cut > "; wait_for ": wild)"
  keys 4; wait_for "sharpness"; wait_for "2/η"   # the stability edge as a series
  keys 1
  keys Up; sleep 0.5   # back on "many"
  wait_for "⊙ base"
  keys r; wait_for "⊙ base"     # one run in focus: the baseline stays

  # the system panel: CPU and memory (GPUs through nvidia-ml-py when present)
  keys 9; wait_for "CPU"; wait_for "GiB"

  # a dialog with a toast raised under it: the toast waits for the dialog to close
  keys "?"; wait_for "heur tui — keys"
  if grep -q "pinned:" <<<"$(screen)"; then fail "a toast covers the help dialog"; fi
  keys Escape
  tail -n 1 <<<"$(screen)" | grep -q "quit" || fail "footer not on the last line"
  keys q; sleep 1
done

echo "tmux dash check ok (80x24, 120x40, xterm-256color)"
exit 0
