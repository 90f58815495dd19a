#!/bin/sh
# Entrypoint of the kvstore node image: every setting comes from KVSTORE_* variables (unknown
# KVSTORE_* names are an error) or from flags passed as the container's command.
set -eu

# The name Docker's embedded DNS (127.0.0.11, on user-defined networks such as compose's)
# gives this container's address: its container name, e.g. kvstore_node_3 (compose v1) or
# kvstore-node-3 (v2). Unlike the hostname (the container id) it survives `up` recreating
# the container, which keeps its /data volume: the node comes back as the same member.
docker_dns_name() {
    grep -qs '^nameserver 127\.0\.0\.11$' /etc/resolv.conf || return 0
    python3 - 2>/dev/null <<'EOF' || true
import random
import socket
import struct


def labels(data, i):
    out = []
    while data[i]:
        if data[i] & 0xC0 == 0xC0:  # compression pointer
            return out + labels(data, struct.unpack(">H", data[i : i + 2])[0] & 0x3FFF)[0], i + 2
        out.append(data[i + 1 : i + 1 + data[i]].decode())
        i += 1 + data[i]
    return out, i + 1


ip = socket.gethostbyname(socket.gethostname())
qname = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
query = struct.pack(">6H", random.randrange(1 << 16), 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".")) + b"\0"
query += struct.pack(">HH", 12, 1)  # PTR, IN
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(2)
    s.sendto(query, ("127.0.0.11", 53))
    data = s.recv(4096)
questions, answers = struct.unpack(">HH", data[4:8])
i = 12
for _ in range(questions):
    i = labels(data, i)[1] + 4
for _ in range(answers):
    i = labels(data, i)[1]
    rtype, _, _, length = struct.unpack(">HHIH", data[i : i + 10])
    if rtype == 12:
        name = labels(data, i + 10)[0][0]  # container name (the rest is the network's)
        if socket.gethostbyname(name) == ip:
            print(name)
        break
    i += 10 + length
EOF
}

# Peers must reach this node at the address it advertises: default to the container's name
# on a Docker network, else its hostname (the pod name under Kubernetes), and the listen port.
if [ -z "${KVSTORE_ADVERTISE:-}" ]; then
    listen=${KVSTORE_LISTEN:-0.0.0.0:7100}
    host=$(docker_dns_name)
    KVSTORE_ADVERTISE="${host:-$(hostname)}:${listen##*:}"
    export KVSTORE_ADVERTISE
fi

# Secure (CLUSTER_TLS_DIR: a volume the cluster's containers share): the first node makes the
# cluster's CA there, and every node issues its own certificate from it at each start, for its
# advertised name, its IP addresses (they may change across restarts) and loopback (for the
# health check). The probe's credentials go to a file the HEALTHCHECK reads.
if [ -n "${CLUSTER_TLS_DIR:-}" ]; then
    tls=$CLUSTER_TLS_DIR
    unset CLUSTER_TLS_DIR  # not a node setting
    stem=$(printf '%s' "$KVSTORE_ADVERTISE" | tr ':' '_')
    rm -f "$tls/nodes/$stem.pem" "$tls/nodes/$stem-key.pem"
    hosts="--host ${KVSTORE_ADVERTISE%:*} --host 127.0.0.1 --host localhost"
    for ip in $(hostname -i 2>/dev/null || true); do
        hosts="$hosts --host $ip"
    done
    # shellcheck disable=SC2086
    kvstore certs --dir "$tls" --node "$KVSTORE_ADVERTISE" $hosts >/dev/null
    KVSTORE_TLS_CA=$tls/ca.pem
    KVSTORE_TLS_CERT=$tls/nodes/$stem.pem
    KVSTORE_TLS_KEY=$tls/nodes/$stem-key.pem
    export KVSTORE_TLS_CA KVSTORE_TLS_CERT KVSTORE_TLS_KEY
    printf 'export KVSTORE_TLS_CA=%s KVSTORE_TLS_CERT=%s KVSTORE_TLS_KEY=%s\n' \
        "$KVSTORE_TLS_CA" "$KVSTORE_TLS_CERT" "$KVSTORE_TLS_KEY" > /run/kvstore-probe.env
fi

exec kvstore serve "$@"
