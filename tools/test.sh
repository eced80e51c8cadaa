#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The whole test suite: ctest and busted against a throwaway cluster, then both
# again on the ASan/UBSan build (skipped with PGSTORE_SANITIZE=0 or when spec
# files are given), then the libFuzzer targets for a bounded time
# (tools/fuzz.sh; skipped with PGSTORE_FUZZ=0 or spec files).
# Each spec file runs in its own database, so `-j N` runs N spec files at
# once (default: twice the cores; `-j 1` is serial); the specs in ALONE run
# one by one after them. Other arguments: spec files or directories, and
# options passed to busted. Last, everything the suite printed and the
# servers logged is searched for the test role's password: finding it fails
# the run. Ends with the wall time and "total: N passed, M failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tools/lib.sh

# Specs that restart or stop the cluster, change its settings, kill
# backends, or load the machine and time themselves (failover, lease
# timeouts, nginx's latency and load test): each runs alone, after the
# parallel batch.
ALONE=(failover fault_crash fault_lease fault_listen lease_holders listen nginx nginx_live nginx_load partitions pool relay replica_reads security)
# Specs that take minutes but time nothing (the soak measures memory, the
# install spec builds twice): they
# start first in the parallel batch, so the rest of the batch runs beside them.
FIRST=(soak install)

passed=0 failed=0 cluster_env="" san_preload="" out=$(mktemp) all=$(mktemp) work=$(mktemp -d)
finish() {
    if [[ -n $cluster_env ]]; then PGSTORE_TEST_DIR=${cluster_env%/env.sh} bash tools/testdb.sh stop; fi
    rm -rf "$out" "$all" "$work"
    printf "wall time: %dm%02ds\n" $((SECONDS / 60)) $((SECONDS % 60))
    echo "total: $passed passed, $failed failed"
}
trap finish EXIT
trap 'exit 130' INT TERM

# tally NAME STATUS PASSED FAILED; a runner that fails with no failed test
# (crash, leak report, no summary) counts as one failure.
tally() {
    passed=$((passed + $3)) failed=$((failed + $4))
    if [[ $2 -ne 0 && $4 -eq 0 ]]; then log "$1 exited with status $2"; failed=$((failed + 1)); fi
}

# run_ctest BUILD_DIR: parses "X% tests passed, F tests failed out of T".
# The C tests name their tables after their process: they run side by side.
run_ctest() {
    ctest --test-dir "$1" --output-on-failure -j "$jobs" 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]} f=0 t=0
    if [[ $(grep -E 'tests? failed out of' "$out" | tail -n 1) =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        f=${BASH_REMATCH[1]} t=${BASH_REMATCH[2]}
    fi
    tally "ctest ($1)" "$rc" $((t - f)) "$f"
    cat "$out" >>"$all"
}

# spec_db FILE: the database of a spec file, pgstore_test_<name>.
spec_db() {
    local name=${1##*/}
    name=${name%.lua}; name=${name%_spec}
    echo "pgstore_test_${name//[^a-z0-9_]/_}"
}

# busted_file BUILD_DIR FILE OUT: one spec file in its own database, its output
# in OUT and its exit status in OUT.rc. busted runs under luajit directly:
# its own re-exec (.busted `lua`) loses the quoting of arguments and the exit
# status (e.g. 23 for a leak report), and LSan exits without flushing stdout,
# hence the line buffering. With one job at a time the output also streams.
busted_file() {
    local dir=$1 file=$2 res=$3 db p=$PWD t0=$SECONDS
    db=$(spec_db "$file")
    [[ $jobs -eq 1 ]] && log "$file"
    local tcp="host=127.0.0.1 user=postgres dbname=$db"
    env PGSTORE_BUILD_DIR="$p/$dir" PGSTORE_HOST_BIN="$p/$dir/pgstore" LUA_CPATH="$p/$dir/lua/?.so;;" \
        LUA_PATH="$p/lua/?.lua;$p/lua/?/init.lua;$p/spec/?.lua;$p/spec/helpers/?.lua;;" \
        PGSTORE_TEST_DSN="$tcp port=$PGSTORE_TEST_PORT" PGSTORE_TEST_REPLICA_DSN="$tcp port=$PGSTORE_TEST_REPLICA_PORT" \
        PGDATABASE="$db" ${san_preload:+"LD_PRELOAD=$san_preload"} \
        luajit -e "io.stdout:setvbuf'line'" "$(command -v busted)" "${busted_opts[@]}" "$file" 2>&1 |
        if [[ $jobs -eq 1 ]]; then tee "$res"; else cat >"$res"; fi
    echo "${PIPESTATUS[0]} $((SECONDS - t0))" >"$res.rc.tmp"
    mv "$res.rc.tmp" "$res.rc"
}

# run_busted BUILD_DIR: every spec file, $jobs at a time, then the ALONE ones
# one by one; each file's output is printed whole when it ends. Parses
# "S successes / F failures / E errors / P pending" of each file.
run_busted() {
    local dir=$1 file rc secs s f batch=() alone=() res
    busted_opts=(--ignore-lua "--cpath=$dir/lua/?.so" "${busted_args[@]}")
    [[ -t 1 ]] && busted_opts+=(-o utfTerminal -Xoutput --color)
    for file in "${specs[@]}"; do
        if [[ " ${ALONE[*]} " == *" $(basename "$file" _spec.lua) "* ]]; then
            alone+=("$file")
        else
            batch+=("$file")
        fi
    done
    # FIRST, then longest first by the times of the last run (build/spec-times;
    # files it does not know before known ones), so that no long file starts last.
    mapfile -t batch < <(for file in "${batch[@]}"; do
        if [[ " ${FIRST[*]} " == *" $(basename "$file" _spec.lua) "* ]]; then
            echo "1000000000 $file"
        elif [[ -f $spec_times ]]; then
            awk -v f="$file" '$1 == f { t = $2 } END { print (t == "" ? 999999 : t), f }' "$spec_times"
        else
            echo "999999 $file"
        fi
    done | sort -s -k1,1nr | cut -d' ' -f2-)
    local dbs=()
    for file in "${specs[@]}"; do dbs+=("$(spec_db "$file")"); done
    if ! bash tools/testdb.sh createdb "${dbs[@]}"; then
        tally "tools/testdb.sh createdb" 1 0 0
        return
    fi
    # report FILE INDEX: prints the file's output and adds up its results.
    report() {
        res="$work/$dir.$2"
        rc=1 secs=0 s=0 f=0
        [[ -f $res.rc ]] && read -r rc secs <"$res.rc"
        [[ $jobs -eq 1 ]] || { log "$1 (${secs}s)"; cat "$res"; }
        if [[ $(sed 's/\x1b\[[0-9;]*m//g' "$res" | grep -E ' / [0-9]+ errors? / ' | tail -n 1) =~ \
              ([0-9]+)\ success(es)?\ /\ ([0-9]+)\ failures?\ /\ ([0-9]+)\ errors? ]]; then
            s=${BASH_REMATCH[1]} f=$((BASH_REMATCH[3] + BASH_REMATCH[4]))
        fi
        tally "busted $1 ($dir)" "$rc" "$s" "$f"
        cat "$res" >>"$all"
        echo "$1 $secs" >>"$work/spec-times"
    }
    # A job is done when its .rc file appears (written last, by rename).
    local running=() next=0
    while [[ $next -lt ${#batch[@]} || ${#running[@]} -gt 0 ]]; do
        if [[ $next -lt ${#batch[@]} && ${#running[@]} -lt $jobs ]]; then
            busted_file "$dir" "${batch[$next]}" "$work/$dir.$next" &
            running+=("$next:$!")
            next=$((next + 1))
            continue
        fi
        local still=() job
        for job in "${running[@]}"; do
            if [[ -f $work/$dir.${job%%:*}.rc ]]; then
                wait "${job#*:}"
                report "${batch[${job%%:*}]}" "${job%%:*}"
            else
                still+=("$job")
            fi
        done
        running=("${still[@]}")
        [[ ${#still[@]} -eq $jobs || $next -ge ${#batch[@]} ]] && sleep 0.2
    done
    local k
    for k in "${!alone[@]}"; do
        log "${alone[$k]} runs alone"
        busted_file "$dir" "${alone[$k]}" "$work/$dir.alone$k"
        report "${alone[$k]}" "alone$k"
    done
    if [[ -f $work/spec-times ]]; then
        cat "$work/spec-times" "$spec_times" 2>/dev/null | awk '!seen[$1]++' >"$work/spec-times.all" &&
            mv "$work/spec-times.all" "$spec_times"
        rm -f "$work/spec-times"
    fi
}

# run_fuzz: tools/fuzz.sh prints "fuzz: P passed, F failed".
run_fuzz() {
    bash tools/fuzz.sh 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]} p=0 f=0
    if [[ $(tail -n 1 "$out") =~ fuzz:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
    fi
    tally "tools/fuzz.sh" "$rc" "$p" "$f"
    cat "$out" >>"$all"
}

# check_secret: the password of the test role (PGSTORE_TEST_SECRET_PASSWORD)
# must not appear in anything the suite printed nor in the servers' logs.
check_secret() {
    local pw=${PGSTORE_TEST_SECRET_PASSWORD:-} hits=0 f
    [[ -n $pw ]] || return 0
    for f in "$all" "$PGSTORE_TEST_DIR"/server.log "$PGSTORE_TEST_DIR"/replica.log; do
        [[ -f $f ]] && hits=$((hits + $(grep -aFc -- "$pw" "$f")))
    done
    if [[ $hits -eq 0 ]]; then
        log "the test password appears nowhere in the suite's output or the server logs"
        tally "password check" 0 1 0
    else
        log "the test password appears $hits times in the suite's output or the server logs"
        tally "password check" 1 0 1
    fi
}

# Arguments: -j N, spec files or directories, options for busted.
jobs=${PGSTORE_TEST_JOBS:-$(($(nproc) * 2))} specs=() busted_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -j) jobs=${2:-}; shift 2 || shift ;;
        -j*) jobs=${1#-j}; shift ;;
        *) if [[ -d $1 ]]; then specs+=("${1%/}"/*_spec.lua)
           elif [[ -f $1 ]]; then specs+=("$1")
           else busted_args+=("$1")
           fi
           shift ;;
    esac
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "-j needs a positive number of jobs"
partial=$(( ${#specs[@]} + ${#busted_args[@]} > 0 ))
[[ ${#specs[@]} -gt 0 ]] || specs=(spec/*_spec.lua)

spec_times=$PWD/build/spec-times

bash tools/deps.sh || { failed=1; die "tools/deps.sh failed"; }
bash tools/build.sh || { failed=1; die "build failed"; }
cluster_env=$(bash tools/testdb.sh start) || { failed=1; die "could not start the test cluster"; }
. "$cluster_env"
export PGSTORE_ROOT=$PWD

run_ctest build
run_busted build

if [[ $partial -eq 0 && ${PGSTORE_SANITIZE:-1} != 0 ]]; then
    if bash tools/build.sh asan; then
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
        export LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp UBSAN_OPTIONS=print_stacktrace=1
        # Host processes the specs start keep ASan and UBSan but not LSan:
        # its stop-the-world tracer crashes now and then under heavy process
        # churn. Leaks are checked in the C tests and the specs' own process.
        export PGSTORE_CHILD_ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:exitcode=23
        run_ctest build-asan
        san_preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
        # The five-minute soak runs in the first pass; here it is a short
        # one, so the whole suite stays within its time budget.
        PGSTORE_SOAK_SECONDS=${PGSTORE_SANITIZE_SOAK_SECONDS:-30} run_busted build-asan
    else
        tally "tools/build.sh asan" 1 0 0
    fi
fi
if [[ $partial -eq 0 && ${PGSTORE_FUZZ:-1} != 0 ]]; then
    run_fuzz
fi
check_secret
exit $((failed > 0))
