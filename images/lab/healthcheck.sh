#!/bin/bash
# Docker HEALTHCHECK of the lab: healthy when the Jupyter server answers its unauthenticated /api with 200.
# Bash alone, through its /dev/tcp: Docker runs this in every running lab, and a Python with urllib costs some
# 40 ms of CPU a check where bash costs a few (benchmarks/load.py counts it in the lab's start).
# Spawned by JupyterHub the server listens where JUPYTERHUB_SERVICE_URL says; standalone on :8888/.
url=${JUPYTERHUB_SERVICE_URL:-http://127.0.0.1:8888/}
rest=${url#*://}
hostport=${rest%%/*}
path=/
[[ $rest == */* ]] && path=/${rest#*/}
[[ $path == */ ]] || path=$path/
port=8888
[[ $hostport == *:* ]] && port=${hostport##*:}
target="http://127.0.0.1:$port${path}api"
unhealthy() {
    echo "unhealthy: $target: $1" >&2 # the reason, in `docker inspect`
    exit 1
}
{ exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || unhealthy "connection refused"
printf 'GET %sapi HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$path" "$port" >&3
IFS= read -r -t 4 status <&3 || unhealthy "no answer within 4 s"
status=${status%$'\r'}
[[ $status =~ ^HTTP/1\.[01]\ 200\  ]] || unhealthy "${status:-closed without an answer}"
