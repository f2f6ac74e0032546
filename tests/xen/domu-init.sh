#!/bin/busybox sh
# SPDX-License-Identifier: MIT
# /init of the test domU: busybox, then pvfree-standin (32 MiB kept,
# 96 MiB declared free; see pvfree-standin.c).  Console: hvc0.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# keep the stand-in's locked pages where they are
echo 0 > /proc/sys/vm/compact_unevictable_allowed
echo "domU: $(uname -r), $(grep MemTotal /proc/meminfo)"
pvfree-standin 32 96 &
while :; do sleep 3600; done
