#!/bin/sh
# Guest-side entry point, exec'ed by /kho-init from the rootfs after the
# pseudo file systems and the 9p shares are mounted.  Arguments are what the
# kernel command line passes after "--" (e.g. "stage=1").
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/project
export PYTHONUNBUFFERED=1
cd /tmp
# Make the kernel's DWARF discoverable where drgn looks by default, as a
# distribution's debug-info package would (/boot/vmlinux-$(uname -r)).
mount -t tmpfs tmpfs /boot && ln -s /kernel/vmlinux "/boot/vmlinux-$(uname -r)"
echo "vmtests-guest: $(uname -r) args: $*"
python3 /project/vmtests/guest/stage.py "$@"
rc=$?
echo "vmtests-guest: stage.py exited with $rc"
if [ $rc -ne 0 ]; then
    dmesg > /results/dmesg-crash-$(date +%s).txt 2>&1
fi
sync
# No systemd in the rootfs: power off with reboot(2).  If that fails, init
# exits and the kernel panics, which pvpanic turns into a QEMU exit.
python3 -c 'import ctypes, os; os.sync(); ctypes.CDLL(None).reboot(0x4321fedc)'
echo "vmtests-guest: poweroff failed" >&2
exit 1
