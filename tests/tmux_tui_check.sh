#!/usr/bin/env bash
# Drive `heur tui` in a real terminal (tmux, 80x24, xterm-256color) over fixture run dirs,
# send keys and check what a person would see. Run by hand or from tests/test_tui_tmux.py.
#   tests/tmux_tui_check.sh            (uses .venv/bin/heur if present, else heur on PATH)
#   KEEP=1 tests/tmux_tui_check.sh     (leave the tmux session running to look at it:
#                                        tmux attach -t <name printed at the end>)
set -eu

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
HEUR="${HEUR:-$ROOT/.venv/bin/heur}"
[ -x "$HEUR" ] || HEUR=heur
WORK="$(mktemp -d)"
SESSION="heur-tui-check-$$"
TMUX_CMD=(tmux -L "$SESSION")   # a private server: never touches the user's sessions

cleanup() {
  if [ -z "${KEEP:-}" ]; then
    "${TMUX_CMD[@]}" kill-server 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

"$PY" "$ROOT/tests/fixtures_tui/make.py" "$WORK" >/dev/null

"${TMUX_CMD[@]}" new-session -d -s "$SESSION" -x 80 -y 24 \
  "cd '$WORK' && TERM=xterm-256color TZ=UTC '$HEUR' tui --runs-dir runs --presets-dir presets; sleep 5"

screen() { "${TMUX_CMD[@]}" capture-pane -p -t "$SESSION"; }
fail() {
  echo "FAIL: $1" >&2
  echo "----- screen -----" >&2
  screen >&2
  exit 1
}
# wait_for TEXT [SECONDS]: poll the screen until TEXT shows up
wait_for() {
  local text="$1" limit="${2:-15}" t=0
  while ! grep -qF -- "$text" <<<"$(screen)"; do
    sleep 0.25
    t=$((t + 1))
    if [ "$t" -ge $((limit * 4)) ]; then fail "did not see '$text'"; fi
  done
  return 0
}
keys() { "${TMUX_CMD[@]}" send-keys -t "$SESSION" "$@"; sleep 0.4; }

# 1. start: sidebar with presets and experiments, footer with the main keys
wait_for "Presets (2)"
wait_for "Experiments (2)"
wait_for "q quit"
wait_for "? help"
# the fixture's running run belonged to the process that wrote it: it is gone -> lost
wait_for "lost"

# 2. highlight the catapult experiment: the loss panel fills, the spike is marked
for _ in 1 2 3 4 5 6; do keys Down; done
wait_for "lr=1.5"
wait_for "loss: train"
wait_for "▲"
grep -q "┤" <<<"$(screen)" || fail "no plot axes on the loss panel"

# 3. panels by number: sharpness, catapult table, CCA heatmap, log, config
keys 4; wait_for "sharpness"
keys 5; wait_for "ratio"; wait_for "8.9"
keys 6; wait_for "fc1"; wait_for "svcca"
keys 7; wait_for "step 400 loss ok"
keys 8; wait_for "[optim]"

# 4. toggles show in the legend line
keys 1 l s x
wait_for "x=samples log smooth=0.6"

# 5. help and back
keys "?"; wait_for "smoothing"
keys Escape; sleep 0.3
if grep -q "smoothing: off" <<<"$(screen)"; then fail "help did not close"; fi

# 6. a run without probes: labelled empty panel
keys Up; keys 4
wait_for "no sharpness events yet"

# 7. at 80x24 nothing is cut that matters: the footer is on the last line
tail -n 1 <<<"$(screen)" | grep -q "quit" || fail "footer not on the last line"

# 8. quit: the TUI exits (runs are not touched by quitting)
keys q
sleep 1
if grep -q "Presets (2)" <<<"$(screen)"; then fail "q did not quit"; fi

echo "tmux check ok (80x24, xterm-256color)"
if [ -n "${KEEP:-}" ]; then echo "session kept: tmux -L $SESSION attach -t $SESSION"; fi
exit 0
