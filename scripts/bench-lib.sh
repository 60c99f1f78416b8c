# Shared by the bench scripts (sourced, not run).

# median / minmax: of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.4g\n", (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { sort -g | awk 'NR==1{mn=$1} {mx=$1} END {printf "%s–%s", mn, mx}'; }

# sign SECRET ID TS FILE: the Standard Webhooks v1 signature (base64, without
# "v1,") of FILE's bytes, computed by openssl, not by this project's code.
sign() {
  local hexkey
  hexkey=$(printf '%s' "${1#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  { printf '%s.%s.' "$2" "$3"; cat "$4"; } | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0
}

# need TOOL: install Debian's package of TOOL when it is missing.
need() {
  command -v "$1" >/dev/null || { echo "bench: installing $1 (Debian package)" >&2; apt-get install -y -qq "$1" >/dev/null; }
}

# wait_ready URL: until URL answers 2xx (60 s at most).
wait_ready() {
  for _ in $(seq 1 120); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
  curl -fsS "$1" >/dev/null
}

# free_addr: 127.0.0.1:<a port nothing listens on now>, chosen at random in
# 20000-29999 (below the kernel's ephemeral range): the machine is shared,
# no port is assumed free.
free_addr() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 10000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "127.0.0.1:$p"; return 0; }
  done
  echo "bench: no free port found" >&2
  return 1
}
