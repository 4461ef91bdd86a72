# The two entry points of the README. Both install what they need.
.PHONY: run test

# vessel's main job: build everything, boot a pod VM with vessel-vmm and talk
# to its agent over vsock (through tests/kvm-host where the local KVM cannot
# boot a guest).
run:
	bash tests/demo.sh

# Every test: lint, unit, host-side integration, and the end-to-end suite that
# boots real VMs.
test:
	bash tests/all.sh
