// The initramfs's /init (busybox sh). It is generic: everything that depends on one run (the command, its
// folder, modules, hugepages) is in guest.sh on the job share, which this script runs chrooted into the
// host's root file system (mounted read-only over 9p).
//
// Guest layout after this script:
//   /                 the host's root, read-only (9p, mount_tag hostroot)
//   /tmp, /var/tmp    writable: overlays of the host's folders under a tmpfs (host files visible)
//   /run, /dev/shm    tmpfs (writable)
//   /run/homi-job     the job share (9p, mount_tag homijob, writable): guest.sh, command.sh, results
//   /proc /sys /dev   the guest's own
// Console markers (HOMI-INIT: ...) let the host follow the boot.
export const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
up() { cut -d' ' -f1 /proc/uptime; }
halt_now() {
  sync
  poweroff -f
  sleep 2
  echo o > /proc/sysrq-trigger
  sleep 60
}
fatal() {
  echo "HOMI-INIT: FATAL: $*"
  halt_now
}
echo "HOMI-INIT: initramfs up at $(up)s"
for m in $(cat /lib/modules/order); do
  insmod /lib/modules/$m.ko || echo "HOMI-INIT: insmod $m failed"
done
MS=262144
R=/newroot
if grep -q 'homi.overlay=1' /proc/cmdline; then
  # Writable root: the host's root (read-only) under a tmpfs upper layer; writes stay in the guest's memory.
  mkdir -p /lower /ovl
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=$MS,cache=loose hostroot /lower || fatal "cannot mount the host root over 9p"
  mount -t tmpfs -o mode=755 tmpfs /ovl && mkdir -p /ovl/upper /ovl/work
  mount -t overlay overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work $R || fatal "cannot mount the overlay root"
else
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=$MS,cache=loose hostroot $R || fatal "cannot mount the host root over 9p"
fi
# /tmp and /var/tmp: writable, yet showing the host's files (a checkout or cache under /tmp stays visible):
# an overlay of the host's folder (read-only) under a tmpfs. Plain tmpfs when the overlay fails.
mkdir -p /scratch && mount -t tmpfs -o mode=755 tmpfs /scratch
writable_dir() {
  if grep -q 'homi.overlay=1' /proc/cmdline; then return 0; fi
  d=$1; n=$2
  [ -d $R$d ] || return 0
  mkdir -p /scratch/$n/upper /scratch/$n/work && chmod 1777 /scratch/$n/upper
  mount -t overlay overlay -o lowerdir=$R$d,upperdir=/scratch/$n/upper,workdir=/scratch/$n/work $R$d 2>/dev/null \
    || mount -t tmpfs -o mode=1777 tmpfs $R$d
}
writable_dir /tmp tmp || fatal "cannot make /tmp writable"
writable_dir /var/tmp vartmp
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm $R/dev/hugepages
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run || fatal "cannot mount tmpfs on /run"
mount -t configfs configfs $R/sys/kernel/config 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mkdir -p $R/run/homi-job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=$MS,cache=none homijob $R/run/homi-job || fatal "cannot mount the job share"
ifconfig lo 127.0.0.1 up 2>/dev/null
hostname homi-guest
echo "HOMI-INIT: root mounted at $(up)s"
[ -f $R/run/homi-job/guest.sh ] || fatal "no guest.sh on the job share"
chroot $R /bin/sh /run/homi-job/guest.sh
echo "HOMI-INIT: guest.sh ended with status $? at $(up)s"
halt_now
`;
