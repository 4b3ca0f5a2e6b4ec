# Shared by scripts/up, scripts/test and scripts/down: find or start the
# services Arena needs, installing what is missing. Sourced, not run.
# Every step is idempotent: running a script twice is harmless.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ARENA_DATA_DIR=${ARENA_DATA_DIR:-$ROOT/.arena}
ARENA_PG_PORT=${ARENA_PG_PORT:-55432}
ARENA_REDIS_PORT=${ARENA_REDIS_PORT:-56379}
export ARENA_MODEL_PATH=${ARENA_MODEL_PATH:-$ARENA_DATA_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf}

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# A secret generated once per install and kept under the data directory
# (mode 0600): the PostgreSQL and Redis passwords, the demo users' password.
secret() {
    local file=$ARENA_DATA_DIR/secrets/$1
    if [ ! -s "$file" ]; then
        mkdir -p "$ARENA_DATA_DIR/secrets"; chmod 700 "$ARENA_DATA_DIR/secrets"
        (umask 077; head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 40 > "$file")
    fi
    cat "$file"
}

pg_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    done
    return 1
}

# Debian packages for whatever is missing. As root we install them; otherwise
# we print the one command that would.
ensure_packages() {
    local missing=()
    command -v cc >/dev/null || missing+=(build-essential)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    if [ -z "${DATABASE_URL:-}" ]; then pg_bin >/dev/null || missing+=(postgresql); fi
    command -v psql >/dev/null || missing+=(postgresql-client)
    if [ -z "${REDIS_URL:-}" ]; then command -v redis-server >/dev/null || missing+=(redis-server); fi
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v python3 >/dev/null || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    # The browser tests drive headless Chromium through chromedriver.
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
    [ ${#missing[@]} -eq 0 ] && return 0
    if is_root && command -v apt-get >/dev/null; then
        say "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        die "missing packages: ${missing[*]}
  install them with:  sudo apt-get install -y ${missing[*]}
  (or point DATABASE_URL / REDIS_URL at servers you already run)"
    fi
}

# PostgreSQL: the server DATABASE_URL names, or our own cluster on loopback
# with its data under $ARENA_DATA_DIR (PostgreSQL refuses to run as root, so
# as root it runs as the `postgres` user).
ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        psql "$DATABASE_URL" -tAc 'select 1' >/dev/null 2>/tmp/arena-psql.err ||
            die "DATABASE_URL is set but PostgreSQL there is not reachable: $(head -1 /tmp/arena-psql.err)
  fix the server, or unset DATABASE_URL to let this script start its own"
        say "PostgreSQL: using DATABASE_URL"
        return 0
    fi
    local bin; bin=$(pg_bin) || die "PostgreSQL server binaries not found (apt-get install postgresql)"
    local pgdata=$ARENA_DATA_DIR/postgres run=()
    mkdir -p "$ARENA_DATA_DIR"
    if is_root; then
        run=(runuser -u postgres --)
        if ! runuser -u postgres -- test -x "$ARENA_DATA_DIR"; then
            # The postgres user cannot reach a data dir below a private home
            # (e.g. /root): keep the cluster in its own home, one per checkout.
            pgdata=/var/lib/postgresql/arena/$(printf "%s" "$ARENA_DATA_DIR" | sha256sum | cut -c1-12)
            say "PostgreSQL data: $pgdata (the postgres user cannot enter $ARENA_DATA_DIR)"
            mkdir -p "$(dirname "$pgdata")"; chown postgres: "$(dirname "$pgdata")"
        fi
        mkdir -p "$pgdata"; chown postgres: "$pgdata"; chmod 700 "$pgdata"
    fi
    mkdir -p "$pgdata"
    echo "$pgdata" > "$ARENA_DATA_DIR/postgres.location"
    local password; password=$(secret postgres)
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        say "PostgreSQL: creating a cluster in $pgdata (password authentication)"
        local pwfile; pwfile=$(mktemp)
        printf '%s\n' "$password" > "$pwfile"
        is_root && chown postgres: "$pwfile"
        "${run[@]}" "$bin/initdb" -D "$pgdata" -U arena --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 --no-locale >/dev/null
        rm -f "$pwfile"
    fi
    if ! "${run[@]}" "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$ARENA_PG_PORT"; then
            die "port $ARENA_PG_PORT is taken by another PostgreSQL; set ARENA_PG_PORT or DATABASE_URL"
        fi
        say "PostgreSQL: starting on 127.0.0.1:$ARENA_PG_PORT"
        "${run[@]}" "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
            -o "-p $ARENA_PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300" \
            start >/dev/null || die "PostgreSQL did not start; see $pgdata/server.log"
    fi
    # A cluster an earlier version made with `trust` gets the password and
    # scram authentication now.
    if grep -Eq '^[^#].*[[:space:]]trust[[:space:]]*$' "$pgdata/pg_hba.conf" 2>/dev/null ||
       "${run[@]}" grep -Eq '^[^#].*[[:space:]]trust[[:space:]]*$' "$pgdata/pg_hba.conf" 2>/dev/null; then
        say "PostgreSQL: switching $pgdata from trust to password authentication"
        psql "postgres://arena@127.0.0.1:$ARENA_PG_PORT/postgres" -qc "alter user arena password '$password'" >/dev/null
        "${run[@]}" sed -i -E 's/[[:space:]]trust[[:space:]]*$/ scram-sha-256/' "$pgdata/pg_hba.conf"
        "${run[@]}" "$bin/pg_ctl" -D "$pgdata" reload >/dev/null
        sleep 1
    fi
    local admin="postgres://arena:$password@127.0.0.1:$ARENA_PG_PORT/postgres"
    if [ "$(psql "$admin" -tAc "select 1 from pg_database where datname = 'arena'")" != 1 ]; then
        psql "$admin" -qc 'create database arena' >/dev/null
    fi
    export DATABASE_URL="postgres://arena:$password@127.0.0.1:$ARENA_PG_PORT/arena"
    say "PostgreSQL: postgres://arena:***@127.0.0.1:$ARENA_PG_PORT/arena (password in $ARENA_DATA_DIR/secrets/postgres)"
}

# redis-cli's arguments for a Redis URL, one per line:
# redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], the password %-encoded as
# in any URL. (`redis-cli -u` sends AUTH with an empty user name for
# redis://:PASSWORD@HOST, which Redis refuses, and warns about the password
# on stderr.)
redis_cli_args() {
    local url=$1 rest auth="" user="" pass="" host port db=0
    case "$url" in
        redis://*) rest=${url#redis://} ;;
        rediss://*) rest=${url#rediss://}; echo --tls ;;
        *) return 1 ;;
    esac
    if [[ "$rest" == *@* ]]; then auth=${rest%@*}; rest=${rest##*@}; fi
    if [[ "$rest" == */* ]]; then db=${rest#*/}; rest=${rest%%/*}; fi
    host=${rest%:*}; port=${rest##*:}
    if [ "$host" = "$rest" ]; then port=6379; fi
    if [[ "$auth" == *:* ]]; then user=${auth%%:*}; pass=${auth#*:}; else pass=$auth; fi
    pass=$(printf '%b' "${pass//%/\\x}")
    user=$(printf '%b' "${user//%/\\x}")
    printf '%s\n' -h "${host:-127.0.0.1}" -p "$port" -n "${db:-0}"
    [ -n "$user" ] && printf '%s\n' --user "$user"
    [ -n "$pass" ] && printf '%s\n' --no-auth-warning -a "$pass"
    return 0
}

# Redis: the server REDIS_URL names, or our own on loopback.
ensure_redis() {
    if [ -n "${REDIS_URL:-}" ]; then
        local args=()
        mapfile -t args < <(redis_cli_args "$REDIS_URL") ||
            die "REDIS_URL must be redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or rediss://…"
        [ "$(redis-cli "${args[@]}" ping 2>&1)" = PONG ] ||
            die "REDIS_URL is set but Redis there does not answer PING ($(redis-cli "${args[@]}" ping 2>&1 | head -1)); fix it or unset REDIS_URL"
        say "Redis: using REDIS_URL"
        return 0
    fi
    local dir=$ARENA_DATA_DIR/redis password
    password=$(secret redis)
    mkdir -p "$dir"
    local cli=(redis-cli -p "$ARENA_REDIS_PORT" --no-auth-warning -a "$password")
    # One an earlier version started without a password gets it now.
    if [ "$(redis-cli -p "$ARENA_REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
        say "Redis: setting the password of the running server"
        redis-cli -p "$ARENA_REDIS_PORT" config set requirepass "$password" >/dev/null
    fi
    if [ "$("${cli[@]}" ping 2>/dev/null)" != PONG ]; then
        say "Redis: starting on 127.0.0.1:$ARENA_REDIS_PORT (password authentication)"
        printf 'requirepass %s\n' "$password" > "$dir/redis.conf"; chmod 600 "$dir/redis.conf"
        redis-server "$dir/redis.conf" --bind 127.0.0.1 --port "$ARENA_REDIS_PORT" --dir "$dir" \
            --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --appendonly yes --save '' >/dev/null
        for _ in $(seq 50); do
            [ "$("${cli[@]}" ping 2>/dev/null)" = PONG ] && break
            sleep 0.1
        done
        [ "$("${cli[@]}" ping 2>/dev/null)" = PONG ] || die "Redis did not start; see $dir/redis.log"
    fi
    export REDIS_URL="redis://:$password@127.0.0.1:$ARENA_REDIS_PORT"
    say "Redis: redis://:***@127.0.0.1:$ARENA_REDIS_PORT (password in $ARENA_DATA_DIR/secrets/redis)"
}

stop_services() {
    local bin pgdata
    if [ -f "$ARENA_DATA_DIR/postgres.location" ] && bin=$(pg_bin); then
        pgdata=$(cat "$ARENA_DATA_DIR/postgres.location")
        if is_root; then
            runuser -u postgres -- "$bin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 && say "PostgreSQL stopped" || true
        else
            "$bin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 && say "PostgreSQL stopped" || true
        fi
    fi
    if [ -f "$ARENA_DATA_DIR/redis/redis.pid" ]; then
        redis-cli -p "$ARENA_REDIS_PORT" --no-auth-warning -a "$(cat "$ARENA_DATA_DIR/secrets/redis" 2>/dev/null)" \
            shutdown nosave >/dev/null 2>&1 && say "Redis stopped" || true
    fi
}

arena_bin() {
    local target=${CARGO_TARGET_DIR:-$ROOT/target}
    echo "$target/debug/arena"
}

# `build_arena` builds the binary together with every test target in one
# invocation, for `scripts/up` and `scripts/test` alike: cargo unifies the
# features of shared dependencies per invocation (the tests' dev-dependencies
# turn on more of them), so building the binary alone would compile nearly
# every crate a second time, and the other script would rebuild it all.
build_arena() {
    say "building arena (the first build compiles candle and friends: several minutes)"
    (cd "$ROOT" && cargo test --workspace --no-run --quiet)
}

ensure_model() {
    "$(arena_bin)" model fetch --out "$ARENA_MODEL_PATH"
}
