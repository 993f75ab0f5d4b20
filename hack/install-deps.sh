#!/usr/bin/env bash
# Installs the Debian packages Skiff needs to run a local cluster, when they
# are missing. Idempotent; prints what it installs.
set -euo pipefail
# package:command that proves it is installed
want=(
	containerd:containerd
	runc:runc
	containernetworking-plugins:/usr/lib/cni/bridge
	nftables:nft
	iproute2:ip
	# nodes: nsenter and unshare enter and pin their namespaces
	util-linux:nsenter
	util-linux:unshare
	mount:mount
	# the busybox image is Debian's static busybox
	busybox-static:/bin/busybox
	etcd-client:etcdctl
	protobuf-compiler:protoc
	# protoc's well-known types, for make proto
	libprotobuf-dev:/usr/include/google/protobuf/descriptor.proto
	curl:curl
	git:git
	make:make
	ca-certificates:/etc/ssl/certs/ca-certificates.crt
)
missing=()
for w in "${want[@]}"; do
	pkg=${w%%:*}
	probe=${w#*:}
	if [[ $probe == /* ]]; then
		[[ -e $probe ]] || missing+=("$pkg")
	else
		command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg")
	fi
done
# util-linux is listed once per command it provides
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')
if ((${#missing[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) != 0 ]]; then
	echo "install-deps: missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
