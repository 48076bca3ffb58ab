#!/bin/sh
# examples/openresty/run.sh [PORT]: the wallboard example (wallboard.lua) in
# Debian's nginx (nginx-light + libnginx-mod-http-lua), as any user, from a
# source tree or an install tree; Ctrl-C stops it and removes what it made.
#
#   sh examples/openresty/run.sh 8080
#
# Against $WOLKVOX_SERVER (with $WOLKVOX_TOKEN) when set, else against the
# bundled fake (bin/wolkvox-fake, or wolkvox-fake on PATH) on a free port.
# nginx runs from a temporary prefix (conf/, logs/, temp files) on
# 127.0.0.1:PORT (default 8080).  The Lua paths are, in this order: the tree
# this script is in (lua/ and build/luajit/, `make LUA=luajit`), $LUA_PATH /
# $LUA_CPATH when set, `luarocks --lua-version=5.1 path`, /usr/local.
set -eu

port=${1:-8080}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# Lua paths for LuaJIT (the 5.1 ABI).
if [ -f "$root/lua/wolkvox/init.lua" ]; then
    lpath="$root/lua/?.lua;$root/lua/?/init.lua"
    cpath="$root/build/luajit/?.so"
elif [ -n "${LUA_PATH:-}" ]; then
    lpath=${LUA_PATH%;;}
    cpath=${LUA_CPATH:-}
    cpath=${cpath%;;}
elif command -v luarocks >/dev/null 2>&1; then
    lpath=$(luarocks --lua-version=5.1 path --lr-path)
    cpath=$(luarocks --lua-version=5.1 path --lr-cpath)
else
    lpath="/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua"
    cpath="/usr/local/lib/lua/5.1/?.so"
fi

# Debian's nginx (in /usr/sbin, not on a user's PATH) and lua-nginx-module.
nginx=$(command -v nginx || echo /usr/sbin/nginx)
modules=/usr/lib/nginx/modules
if [ ! -f "$modules/ngx_http_lua_module.so" ]; then
    echo "run.sh: $modules/ngx_http_lua_module.so is missing: apt-get install nginx-light libnginx-mod-http-lua" >&2
    exit 1
fi

prefix=$(mktemp -d "${TMPDIR:-/tmp}/wallboard.XXXXXX")
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
fake_pid='' nginx_pid=''
stop() {
    trap - EXIT INT TERM
    if [ -n "$nginx_pid" ]; then
        kill -QUIT "$nginx_pid" 2>/dev/null || :
        wait "$nginx_pid" 2>/dev/null || :
    fi
    if [ -n "$fake_pid" ]; then
        kill "$fake_pid" 2>/dev/null || :
        wait "$fake_pid" 2>/dev/null || :
    fi
    rm -rf "$prefix"
}
trap stop EXIT
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

base_url=''
if [ -z "${WOLKVOX_SERVER:-}" ]; then
    fake="$root/bin/wolkvox-fake"
    [ -x "$fake" ] || fake=$(command -v wolkvox-fake) || {
        echo "run.sh: no wolkvox-fake (set WOLKVOX_SERVER and WOLKVOX_TOKEN for a real server)" >&2
        exit 1
    }
    : >"$prefix/logs/fake.log"
    "$fake" --port 0 >"$prefix/logs/fake.log" 2>&1 &
    fake_pid=$!
    i=0
    until base_url=$(sed -n 's/^wolkvox-fake listening on \(http[^ ]*\).*/\1/p' "$prefix/logs/fake.log") \
        && [ -n "$base_url" ]; do
        i=$((i + 1))
        if [ "$i" -gt 100 ] || ! kill -0 "$fake_pid" 2>/dev/null; then
            echo "run.sh: the fake did not start:" >&2
            cat "$prefix/logs/fake.log" >&2
            exit 1
        fi
        sleep 0.05
    done
    WOLKVOX_TOKEN=test-token
    export WOLKVOX_TOKEN
fi
WALLBOARD_BASE_URL=$base_url
export WALLBOARD_BASE_URL

# As root, the workers would run as nobody, who may not read the tree.
user=''
[ "$(id -u)" = 0 ] && user='user root;'

cat >"$prefix/conf/nginx.conf" <<EOF
load_module $modules/ndk_http_module.so;
load_module $modules/ngx_http_lua_module.so;
$user
daemon off;
worker_processes 1;
pid $prefix/logs/nginx.pid;
error_log $prefix/logs/error.log notice;
env WOLKVOX_SERVER;
env WOLKVOX_TOKEN;
env WALLBOARD_TTL;
env WALLBOARD_BASE_URL;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    lua_package_path "$lpath;$here/?.lua;;";
    lua_package_cpath "$cpath;;";
    lua_shared_dict wolkvox 1m;
    lua_shared_dict wallboard 1m;
    resolver 127.0.0.53 ipv6=off;
    lua_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;
    lua_ssl_verify_depth 3;
    server {
        listen 127.0.0.1:$port;
        location = /wallboard { content_by_lua_block {
            local base_url = os.getenv("WALLBOARD_BASE_URL")
            require("wallboard").handle { base_url = base_url ~= "" and base_url or nil }
        } }
    }
}
EOF

"$nginx" -p "$prefix" -c "$prefix/conf/nginx.conf" -e "$prefix/logs/error.log" &
nginx_pid=$!
i=0
until [ -s "$prefix/logs/nginx.pid" ]; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$nginx_pid" 2>/dev/null; then
        echo "run.sh: nginx did not start:" >&2
        cat "$prefix/logs/error.log" >&2 2>/dev/null || :
        exit 1
    fi
    sleep 0.05
done
echo "wallboard: http://127.0.0.1:$port/wallboard (against ${WOLKVOX_SERVER:-the fake, $base_url}; Ctrl-C stops it)"
wait "$nginx_pid"
