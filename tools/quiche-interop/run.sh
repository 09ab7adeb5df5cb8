#!/usr/bin/env bash
# quicsand against quiche (the crate from crates.io, with the BoringSSL it vendors), over HTTP/0.9
# (ALPN hq-interop) on 127.0.0.1. quiche's side is this directory's `quiche-interop` program; quicsand's
# side is the repository's `server` and `client` examples, and `quicsand-h3 --hq` for key updates that
# quicsand starts (the examples have no option for that).
#
# Needs cmake and a C and C++ compiler, for the BoringSSL that quiche builds:
#   apt-get install -y cmake        # gcc and g++ too, if missing
#   bash tools/quiche-interop/run.sh            # every case
#   bash tools/quiche-interop/run.sh plain ku   # only the cases named (see the list at the bottom)
# Environment: WORK (scratch directory, default a new one under /tmp), PORT_Q (quicsand's servers,
# default 4450), PORT_C (quiche's server, default 4451), CARGO_TARGET_DIR (shared by both builds).
# Each case prints PASS or FAIL with its figures; logs stay in $WORK. The last line counts them, and
# the exit status is 0 only when every case passed.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${WORK:-$(mktemp -d /tmp/quiche-interop.XXXXXX)}"
PORT_Q="${PORT_Q:-4450}"
PORT_C="${PORT_C:-4451}"
mkdir -p "$WORK"
cd "$WORK" || exit 2

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/target}"
(cd "$HERE" && cargo build --release --quiet) || exit 2
(cd "$ROOT" && cargo build --release --quiet --example server --example client) || exit 2
BIN="$CARGO_TARGET_DIR/release"
QUICHE="$BIN/quiche-interop"
H3="$BIN/quicsand-h3"
QS_SERVER="$BIN/examples/server"
QS_CLIENT="$BIN/examples/client"

mkdir -p www
[ -s www/big.bin ] || head -c 16777216 /dev/urandom > www/big.bin
echo "hello from the interop run" > www/hello.txt
[ -s www/1m.bin ] || head -c 1048576 /dev/urandom > www/1m.bin
if [ ! -s cert.pem ]; then
    # CA:FALSE: quicsand's verifier (webpki) refuses a CA certificate as an end entity.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -keyout key.pem -out cert.pem -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE 2>/dev/null
fi
echo "quiche: $(grep -A1 '^name = "quiche"$' "$HERE/Cargo.lock" | sed -n 's/version = //p'); work directory $WORK"

passed=0
failed=0
result() { if [ "$2" = 1 ]; then passed=$((passed + 1)); echo "PASS $1: $3"; else failed=$((failed + 1)); echo "FAIL $1: $3"; fi; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
start() { # log command...
    local log="$1"; shift
    "$@" > "$log" 2>&1 &
    pids+=($!)
    SERVER_PID=$!
    sleep 0.7
}
stop() { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }
# The value of a field of the quiche client's JSON line.
field() { python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(eval('d'+sys.argv[2]))" "$1" "$2"; }
# quicsand's counters for the last connection that ended (RUST_LOG=debug server log).
counters() { grep 'connection counters' "$1" | tail -n 1 | grep -o -E '(key_updates|path_migrations|path_validation_failures|packets_lost|path_mtu): [0-9]+' | tr '\n' ' '; }

# quiche client: big.bin, hello.txt and a missing file from port $1; extra options follow.
quiche_get() { # case port [options...]
    local name="$1" port="$2"; shift 2
    rm -rf "dl-$name"; mkdir -p "dl-$name"
    timeout 90 "$QUICHE" client --ca "${CA:-cert.pem}" --output "dl-$name" "$@" "https://localhost:$port/big.bin" \
        "https://localhost:$port/hello.txt" "https://localhost:$port/missing" > "quiche-client-$name.json" 2> "quiche-client-$name.log"
    local ok=1
    cmp -s "dl-$name/big.bin" www/big.bin || ok=0
    cmp -s "dl-$name/hello.txt" www/hello.txt || ok=0
    [ "$(field "quiche-client-$name.json" "['requests'][2]['reset']")" = 404 ] || ok=0
    OK=$ok
    DETAIL="$(field "quiche-client-$name.json" "['secs_after_handshake']") s after the handshake, $(field "quiche-client-$name.json" "['mbit_s']") Mbit/s, resumed $(field "quiche-client-$name.json" "['resumed']"), 0-RTT requests $(field "quiche-client-$name.json" "['requests_in_early_data']"), rebound $(field "quiche-client-$name.json" "['rebound']"), peer close: $(field "quiche-client-$name.json" "['peer_error']")"
}
# quicsand client (the example) against quiche's server on $PORT_C.
quicsand_get() { # case [options...]
    local name="$1"; shift
    rm -rf "dl-$name"
    RUST_LOG=debug timeout 90 "$QS_CLIENT" --ca cert.pem --output "dl-$name" "$@" "https://localhost:$PORT_C/big.bin" \
        "https://localhost:$PORT_C/hello.txt" "https://localhost:$PORT_C/missing" > "quicsand-client-$name.out" 2> "quicsand-client-$name.log"
    local rc=$? ok=1
    [ $rc = 1 ] || ok=0   # 1: not every file arrived (the missing one was reset)
    cmp -s "dl-$name/big.bin" www/big.bin || ok=0
    cmp -s "dl-$name/hello.txt" www/hello.txt || ok=0
    grep -q '/missing: reset by the server (code 404)' "quicsand-client-$name.log" || ok=0
    OK=$ok
    DETAIL="$(cat "quicsand-client-$name.out"); quicsand: $(grep -o -E '(key_updates|packets_lost|path_mtu): [0-9]+' "quicsand-client-$name.log" | tail -n 3 | tr '\n' ' ')"
}

# The quicsand example server writes its own certificate (cert-qs.pem); the quiche client trusts it.
quiche_get_qs() { # case [options...]
    local name="$1"; shift
    CA=cert-qs.pem quiche_get "$name" "$PORT_Q" "$@"
    sleep 0.5   # for the server's counters, logged when the connection ends
}
case_plain() {
    start qs-server-plain.log env RUST_LOG=debug "$QS_SERVER" --listen "127.0.0.1:$PORT_Q" --root www --write-cert cert-qs.pem
    quiche_get_qs plain
    result "quiche client -> quicsand server: GET x3" "$OK" "$DETAIL; quicsand: $(counters qs-server-plain.log)"
    stop
}
case_resume() {
    start qs-server-resume.log env RUST_LOG=debug "$QS_SERVER" --listen "127.0.0.1:$PORT_Q" --root www --write-cert cert-qs.pem
    rm -f session.bin
    quiche_get_qs resume1 --session-file session.bin --early-data
    local ok1=$OK
    quiche_get_qs resume2 --session-file session.bin --early-data
    [ "$ok1" = 1 ] && [ "$(field quiche-client-resume2.json "['resumed']")" = True ] || OK=0
    result "quiche client -> quicsand server: second connection resumes with the first one's ticket" "$OK" "$DETAIL"
    stop
}
case_rebind() {
    start qs-server-rebind.log env RUST_LOG=debug "$QS_SERVER" --listen "127.0.0.1:$PORT_Q" --root www --write-cert cert-qs.pem
    quiche_get_qs rebind --rebind-after 4000000
    local c; c=$(counters qs-server-rebind.log)
    echo "$c" | grep -q 'path_migrations: [1-9]' || OK=0
    result "quiche client -> quicsand server: client moves to a new port after 4 MB (NAT rebinding)" "$OK" "$DETAIL; quicsand: $c"
    stop
}
case_ku() {
    start qs-h3-ku.log "$H3" server --hq --listen "127.0.0.1:$PORT_Q" --cert cert.pem --key key.pem --root www --key-update-every 2000000
    quiche_get ku "$PORT_Q"
    sleep 0.5
    local c; c=$(grep '^closed:' qs-h3-ku.log | tail -n 1)
    echo "$c" | grep -q 'key_updates=[1-9]' || OK=0
    result "quiche client -> quicsand-h3 --hq server starting key updates (every 2 MB sent)" "$OK" "$DETAIL; quicsand: ${c#closed: }"
    stop
}
case_conc() {
    start qs-server-conc.log env RUST_LOG=debug "$QS_SERVER" --listen "127.0.0.1:$PORT_Q" --root www --write-cert cert-qs.pem
    local urls=() i
    for i in $(seq 1 50); do urls+=("https://localhost:$PORT_Q/1m.bin"); done
    timeout 60 "$QUICHE" client --ca cert-qs.pem "${urls[@]}" > quiche-client-conc.json 2> quiche-client-conc.log
    local n; n=$(python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read()); print(sum(1 for r in d['requests'] if r['fin'] and r['bytes']==1048576))" quiche-client-conc.json)
    result "quiche client -> quicsand server: 50 concurrent requests for 1 MiB" "$([ "$n" = 50 ] && echo 1 || echo 0)" \
        "$n complete, $(field quiche-client-conc.json "['secs_after_handshake']") s, $(field quiche-client-conc.json "['mbit_s']") Mbit/s"
    stop
}
case_rconc() {
    start quiche-server-rconc.log "$QUICHE" server --listen "127.0.0.1:$PORT_C" --cert cert.pem --key key.pem --root www
    local urls=() i
    for i in $(seq 1 50); do urls+=("https://localhost:$PORT_C/1m.bin"); done
    timeout 60 "$QS_CLIENT" --ca cert.pem "${urls[@]}" > quicsand-client-rconc.out 2> quicsand-client-rconc.log
    local rc=$?
    result "quicsand client -> quiche server: 50 concurrent requests for 1 MiB" "$([ $rc = 0 ] && grep -q '^50/50 files' quicsand-client-rconc.out && echo 1 || echo 0)" \
        "rc=$rc; $(cat quicsand-client-rconc.out)"
    stop
}
case_rplain() {
    start quiche-server-rplain.log "$QUICHE" server --listen "127.0.0.1:$PORT_C" --cert cert.pem --key key.pem --root www
    quicsand_get rplain
    sleep 0.5
    result "quicsand client -> quiche server: GET x3" "$OK" "$DETAIL; quiche: $(grep closed quiche-server-rplain.log)"
    stop
}
case_rretry() {
    start quiche-server-rretry.log "$QUICHE" server --listen "127.0.0.1:$PORT_C" --cert cert.pem --key key.pem --root www --retry
    quicsand_get rretry
    grep -q 'Retry sent' quiche-server-rretry.log && grep -q 'Retry token valid' quiche-server-rretry.log || OK=0
    result "quicsand client -> quiche server sending Retry" "$OK" "$DETAIL; quiche: $(grep -E 'Retry|closed' quiche-server-rretry.log | tr '\n' ' ')"
    stop
}
case_rku() {
    start quiche-server-rku.log "$QUICHE" server --listen "127.0.0.1:$PORT_C" --cert cert.pem --key key.pem --root www
    rm -rf dl-rku; mkdir -p dl-rku
    timeout 90 "$H3" client --hq --ca cert.pem --output dl-rku --key-update-every 2000000 "https://localhost:$PORT_C/big.bin" \
        "https://localhost:$PORT_C/hello.txt" "https://localhost:$PORT_C/missing" > quicsand-h3-rku.out 2> quicsand-h3-rku.log
    local ok=1
    cmp -s dl-rku/big.bin www/big.bin && cmp -s dl-rku/hello.txt www/hello.txt || ok=0
    grep -q '^/missing: status reset 404' quicsand-h3-rku.out || ok=0
    grep '^done:' quicsand-h3-rku.log | grep -q 'key_updates=[1-9]' || ok=0
    result "quicsand-h3 --hq client starting key updates (every 2 MB received) -> quiche server" "$ok" \
        "$(tail -n 1 quicsand-h3-rku.out); quicsand: $(sed -n 's/^done: //p' quicsand-h3-rku.log); quiche: $(grep closed quiche-server-rku.log)"
    stop
}
case_rv2() {
    start quiche-server-rv2.log "$QUICHE" server --listen "127.0.0.1:$PORT_C" --cert cert.pem --key key.pem --root www
    timeout 30 "$QS_CLIENT" --ca cert.pem --quic-version 2 --timeout 10 "https://localhost:$PORT_C/hello.txt" > quicsand-client-rv2.out 2> quicsand-client-rv2.log
    local rc=$? ok=0
    grep -q 'no QUIC version in common' quicsand-client-rv2.log && grep -q 'Version Negotiation' quiche-server-rv2.log && ok=1
    result "quicsand client on QUIC v2 -> quiche (version 1 only): Version Negotiation, no common version" "$ok" \
        "rc=$rc; $(grep -o 'connection lost: .*' quicsand-client-rv2.log); quiche: $(grep 'Version Negotiation' quiche-server-rv2.log)"
    stop
}

all=(plain resume rebind ku conc rplain rretry rku rconc rv2)
cases=("$@")
[ ${#cases[@]} = 0 ] && cases=("${all[@]}")
for c in "${cases[@]}"; do   # a misspelt case would otherwise count as neither passed nor failed
    declare -F "case_$c" >/dev/null || { echo "unknown case $c (cases: ${all[*]})" >&2; exit 2; }
done
for c in "${cases[@]}"; do "case_$c"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
