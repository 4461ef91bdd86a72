# The two entry points of the README. Both install what they need.
.PHONY: run test

# vessel's main job: build everything, start vesseld on its default config
# and run a busybox pod and container through the CRI with the `vessel`
# client (tests/demo.sh; through tests/kvm-host where the local KVM cannot
# boot a guest).
run:
	bash tests/demo.sh

# Every test: lint, unit, host-side integration, and the end-to-end suite that
# boots real VMs.
test:
	bash tests/all.sh
