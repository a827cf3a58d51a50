#!/bin/sh
# PID 1 of the VM test lane (`cargo xtask vm-test`, xtask/src/vm.rs): set up a pure
# cgroup v2 machine, run every test binary listed in /vmtest/tests, power off.
#
# Two channels to the host:
#   console (ttyS0)   everything the tests print, plus "vmtest: ..." progress lines;
#   results (ttyS1)   one "VMTEST <what> ..." line per event, nothing else writes there,
#                     so kernel messages or test output can never fake or garble a result.
# Each report opens and closes ttyS1; the last close of a serial port waits until its
# output is sent, so a line that was reported is on the host before the VM powers off.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /sbin /usr/bin /usr/sbin
/bin/busybox --install -s

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# Scratch space on its own tmpfs, named by TMPDIR. /tmp itself stays as the initramfs
# made it: the checkout (binaries at their host paths, fixtures in crate dirs) may be
# under /tmp, and a tmpfs mounted there would hide it.
chmod 1777 /tmp
mkdir -p /vmtmp
mount -t tmpfs -o mode=1777 tmpfs /vmtmp
export TMPDIR=/vmtmp
mount -t tmpfs -o mode=755 tmpfs /run
# Keep kernel messages (e.g. the OOM kills that memory tests provoke) out of the test
# output on the console; emergencies such as a panic still show.
echo 1 > /proc/sys/kernel/printk

say() { echo "vmtest: $*"; }
report() { echo "VMTEST $*" > /dev/ttyS1; }

lane=
scratch=
for word in $(cat /proc/cmdline); do
    case $word in
    vmtest.lane=*) lane=${word#vmtest.lane=} ;;
    vmtest.scratch=*) scratch=${word#vmtest.scratch=} ;;
    esac
done
report BOOT "$(uname -r)"

# cgroup2 alone at the usual place, as on a systemd machine in unified mode.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup ||
    say "cannot mount cgroup2 at /sys/fs/cgroup"
for c in cpu memory pids io cpuset; do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2> /dev/null ||
        say "controller $c cannot be enabled on this kernel"
done
say "kernel $(uname -r), root subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

ip link set lo up || say "cannot bring lo up"
hostname vmtest

# Modules the tests need (NVMe for the scratch disk, overlayfs for the sandbox), in
# dependency order; built-in ones are not listed.
if [ -f "/vmtest/modules/$lane/order" ]; then
    for m in $(cat "/vmtest/modules/$lane/order"); do
        insmod "/vmtest/modules/$lane/$m" || say "insmod $m failed"
    done
fi

# The NVMe scratch disk (io.max tests).
if [ -n "$scratch" ]; then
    i=0
    while [ ! -e /sys/block/nvme0n1/dev ] && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ -e /sys/block/nvme0n1/dev ]; then
        VM_SCRATCH_DEV=$(cat /sys/block/nvme0n1/dev)
        export VM_SCRATCH_DEV
        say "scratch disk /dev/nvme0n1 is $VM_SCRATCH_DEV (VM_SCRATCH_DEV)"
        report SCRATCH "$VM_SCRATCH_DEV"
    else
        say "no scratch disk: /sys/block/nvme0n1 did not appear"
        report SCRATCH none
    fi
fi

export CGROUPKIT_LANE="vm-$lane" HOME=/root USER=root RUST_BACKTRACE=1
# Property tests need no kernel: the host lane runs them in full; here a few cases
# keep them from costing minutes under software emulation.
export PROPTEST_CASES=16
# Defines vmtest_run BINARY: runs it with the test arguments given to cargo xtask vm-test.
. /vmtest/config

while IFS='|' read -r dir bin; do
    [ -n "$bin" ] || continue
    say "run $bin"
    report START "$bin"
    (cd "$dir" && CARGO_MANIFEST_DIR="$dir" vmtest_run "$bin") < /dev/null
    rc=$?
    say "exit $rc $bin"
    report EXIT "$rc" "$bin"
done < /vmtest/tests

# Let the console drain (stty sets its attributes with TCSADRAIN), then report the end.
stty -F /dev/console "$(stty -F /dev/console -g)" 2> /dev/null
report DONE
sync
poweroff -f
