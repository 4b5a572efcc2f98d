#!/bin/sh
# gpu-probe: run nvidia-smi and print one JSON line describing the visible NVIDIA GPUs (exit 3 if none).

query=index,name,uuid,memory.total,driver_version
out= rc=0 cuda= reason=

if command -v nvidia-smi >/dev/null 2>&1; then
    out=$(nvidia-smi --query-gpu=$query --format=csv,noheader,nounits 2>&1)
    rc=$?
    # CUDA version is only in the plain header: "| NVIDIA-SMI ... Driver Version: X   CUDA Version: 12.2 |"
    [ "$rc" -eq 0 ] && cuda=$(nvidia-smi 2>/dev/null | awk 'match($0, /CUDA Version: *[0-9][0-9.]*/) {
        v = substr($0, RSTART, RLENGTH); sub(/^CUDA Version: */, "", v); print v; exit }')
else
    reason="nvidia-smi not found: no NVIDIA runtime or no GPU device request"
fi

# Rows: index, name, uuid, memory.total (MiB), driver_version. Other lines are diagnostics.
printf '%s\n' "$out" | RC=$rc CUDA=$cuda REASON=$reason awk -F, '
function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
function js(s,    r, i, c) {
    r = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\\" || c == "\"") r = r "\\" c
        else if (c in ctl) r = r ctl[c]
        else r = r c
    }
    return "\"" r "\""
}
function num(s) { return s ~ /^[0-9]+$/ ? s + 0 : "null" }
BEGIN {
    for (i = 1; i < 32; i++) ctl[sprintf("%c", i)] = sprintf("\\u%04x", i)
    ctl["\t"] = "\\t"; ctl["\n"] = "\\n"; ctl["\r"] = "\\r"
}
NF >= 5 && trim($1) ~ /^[0-9]+$/ {
    name = $2
    for (i = 3; i <= NF - 3; i++) name = name "," $i   # tolerate commas in the name
    gpus = gpus (n++ ? ", " : "") "{\"index\": " (trim($1) + 0) ", \"name\": " js(trim(name)) \
        ", \"uuid\": " js(trim($(NF - 2))) ", \"memory_mb\": " num(trim($(NF - 1))) "}"
    if (driver == "") driver = trim($NF)
    next
}
first == "" && trim($0) != "" { first = trim($0) }
END {
    rc = ENVIRON["RC"]; reason = ENVIRON["REASON"]
    if (reason == "" && rc != 0) reason = "nvidia-smi failed with exit code " rc (first != "" ? ": " first : "")
    if (reason == "" && n == 0) reason = "nvidia-smi reported no GPUs" (first != "" ? ": " first : "")
    if (reason != "") {
        printf "{\"gpus\": [], \"driver\": null, \"cuda\": null, \"reason\": %s}\n", js(reason)
        exit 3
    }
    cuda = ENVIRON["CUDA"]
    printf "{\"gpus\": [%s], \"driver\": %s, \"cuda\": %s, \"reason\": null}\n", gpus,
        (driver != "" ? js(driver) : "null"), (cuda != "" ? js(cuda) : "null")
}'
