# SPDX-License-Identifier: GPL-2.0
#
# scripts/guest-nullb.sh - sourced by the guest scripts (bench-guest,
# profile-guest) inside a qemu/run VM: null_blk devices made through
# configfs, beside qemu/init's nullb0 and nullb1.
#
# nullb_make NAME IRQMODE COMPLETION_NSEC MEMORY_BACKED
#   A 64 MiB device /dev/NAME like nullb0 (mq, 512 B blocks): IRQMODE 0
#   completes in the submitting context, 2 by a timer after COMPLETION_NSEC;
#   MEMORY_BACKED 1 keeps the data written (and copies it on every read),
#   0 moves no data, as a device that does DMA costs the CPU nothing for
#   it.  Prints /dev/NAME; fails, printing nothing, where it can not.
nullb_make() {
	_nb=/sys/kernel/config/nullb/$1
	[ -d /sys/kernel/config/nullb ] && mkdir "$_nb" 2>/dev/null &&
		echo 64 >"$_nb/size" && echo 512 >"$_nb/blocksize" &&
		echo 2 >"$_nb/queue_mode" && echo "$2" >"$_nb/irqmode" &&
		echo "$3" >"$_nb/completion_nsec" &&
		echo "$4" >"$_nb/memory_backed" && echo 1 >"$_nb/power" &&
		[ -b "/dev/$1" ] && echo "/dev/$1"
}

# The devices of two bench workloads, which make profile must share for its
# counts to explain the bench's figures (scripts/bench-guest says why each
# is as it is):
# nullb_fio NAME      the cost workloads' device: a 100 us timer, no memory
#                     backing
# nullb_forklat NAME  forklat's: a 100 ms timer, so that its reads stay in
#                     flight through the whole fork
nullb_fio() {
	nullb_make "$1" 2 100000 0
}

nullb_forklat() {
	nullb_make "$1" 2 100000000 1
}
