#!/usr/bin/env bash
# vessel's main job for now (README, `make run`): build everything, boot a pod
# VM with vessel-vmm and talk to its agent over vsock, printing each step.
# Runs through tests/kvm-host, which picks native KVM or the nested test host.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
eval "$(tests/artifacts.sh)"
tests/kvm-host/run "$VESSEL_VESSELD" boot-vm "$@"
