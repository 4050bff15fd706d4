# Sourced by the bench scripts: `scratch <name>` makes a temporary folder
# in $work and, on exit, ends every process whose pid was added to
# $pids and removes the folder.
scratch() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  pids=()
  trap scratch_cleanup EXIT
}

scratch_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
