"""kvbench's own gRPC: a minimal client of etcd's v3 KV service (--store etcd) and the unary
echo that bench/compare times as the machine's floor. The only modules of kvstore.bench that
import grpc (tools/check_layers.py confines grpc to rpc, client, _pb and this package): they
talk to services that are not kvstore's, so kvstore's own transport layers have no place for
them."""
