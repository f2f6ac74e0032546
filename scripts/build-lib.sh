# SPDX-License-Identifier: MIT
#
# What the cached builds of the hypervisor glue share (hv-kvm/build-qemu.sh,
# hv-kvm/libvirt/build-libvirt.sh): the cache, the job count and the lock
# that keeps two heavy builds from sharing this machine's cores; reading a
# series, naming its inputs for a cache key and laying it onto a source
# tree.
#
# A series is a directory of patches with a file `series` whose lines are
# "PATCH [NEW-FILE...]" (scripts/make-series explains the format), and an
# overlay: a directory that mirrors the upstream tree and holds the new
# files, some of them links to the shared files in include/ and host/.
#
# Source it, which sets
#   cache  $PVFREE_CACHE, default ~/.cache/pvfree
#   jobs   $PVFREE_JOBS, default 2
#   lock   the heavy-build lock file (flock)
# and, with log() and die() defined, call
#   series_read PATCH_DIR OVERLAY   sets series_patches (paths) and
#                                   series_files (paths below OVERLAY)
#   series_inputs                   prints the key lines: this library,
#                                   the series file, every patch, every
#                                   overlay file's path and contents
#   series_apply TREE               copies the overlay (links followed)
#                                   into TREE and applies the patches

cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}
jobs=${PVFREE_JOBS:-2}
lock=/tmp/pvfree-heavy.lock

series_read() {
	series_dir=$1
	series_overlay=$2
	series_patches=()
	series_files=()
	[ -f "$series_dir/series" ] || return 0
	local p _
	while read -r p _; do
		case "$p" in ''|'#'*) continue ;; esac
		[ -f "$series_dir/$p" ] || die "series lists missing patch $p"
		series_patches+=("$series_dir/$p")
	done < "$series_dir/series"
	# A build without patches (a plain QEMU) has no new files either.
	[ ${#series_patches[@]} -gt 0 ] && [ -d "$series_overlay" ] || return 0
	mapfile -t series_files < <(cd "$series_overlay" &&
		find . -type f -o -type l | sed 's|^\./||' | sort)
	# A link that leads nowhere (a moved host/ file) is an error here,
	# not a compile error later.
	local f
	for f in "${series_files[@]}"; do
		[ -e "$series_overlay/$f" ] ||
			die "$series_overlay/$f is a dangling link"
	done
}

series_inputs() {
	local p f
	sha256sum "${BASH_SOURCE[0]}" | cut -c1-64
	[ -f "$series_dir/series" ] && sha256sum "$series_dir/series" | cut -c1-64
	for p in "${series_patches[@]}"; do
		echo "$(basename "$p") $(sha256sum < "$p" | cut -c1-64)"
	done
	# Paths too: moving a file changes the tree.
	for f in "${series_files[@]}"; do
		echo "$f $(sha256sum < "$series_overlay/$f" | cut -c1-64)"
	done
}

series_apply() {
	local tree=$1 f p
	for f in "${series_files[@]}"; do
		install -D -m 0644 "$series_overlay/$f" "$tree/$f"
	done
	for p in "${series_patches[@]}"; do
		log "applying $(basename "$p")"
		patch -d "$tree" -p1 --batch --quiet --no-backup-if-mismatch \
			< "$p" >&2 || die "patch $(basename "$p") does not apply"
	done
}
