//! Mounted block devices, from `/proc/self/mountinfo` (through the
//! `procfs` crate, line by line), and the size of their filesystems.
use log::debug;
use procfs::process::MountInfo;

/// The lines of a `mountinfo` file the crate can parse, each on its own:
/// one line that cannot be (a mount point that is not UTF-8, from any
/// user's FUSE mount) does not hide the others. `cut`: the read stopped at
/// its bound, so the last line may be incomplete and is dropped.
pub(crate) fn mount_infos(buf: &[u8], cut: bool) -> Vec<MountInfo> {
    let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
    if cut || buf.ends_with(b"\n") {
        // The piece after the last newline: cut short, or empty.
        lines.pop();
    }
    lines
        .into_iter()
        .filter_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            match MountInfo::from_line(line) {
                Ok(mount) => Some(mount),
                Err(error) => {
                    debug!("skipping a mountinfo line: {error}");
                    None
                }
            }
        })
        .collect()
}

/// (device, unescaped mount point, filesystem type) of the mounts of a
/// `/dev/` device. The crate hands `mountinfo` fields out as the kernel
/// wrote them (escaped); the mount point is unescaped here, once.
///
/// Any user can mount a FUSE filesystem and name its source `/dev/...`,
/// and `statvfs` on it waits on its server, which may never answer: FUSE
/// mounts (`fuse`, `fuse.*`) are skipped, and so are mounts without a
/// block device (major 0), except btrfs and bcachefs, whose mounts always
/// show an anonymous device (and which only root mounts). `fuseblk` (a
/// real block device, which only root may mount) is kept.
pub(crate) fn block_mounts(mounts: &[MountInfo]) -> impl Iterator<Item = (&str, String, &str)> {
    mounts.iter().filter_map(|m| {
        let device = m.mount_source.as_deref()?;
        let mount_point = m.mount_point.to_str()?;
        let fs_type = m.fs_type.as_str();
        let user_fuse = fs_type == "fuse" || fs_type.starts_with("fuse.");
        let anonymous = m.majmin.split(':').next().is_none_or(|major| major == "0");
        let block = !anonymous || matches!(fs_type, "btrfs" | "bcachefs");
        (device.starts_with("/dev/") && block && !user_fuse)
            .then(|| (device, unescape_mount(mount_point), fs_type))
    })
}

/// `/proc/PID/mountinfo` escapes space, tab, newline and backslash as octal
/// (`\ooo`, at most `\377`); anything else is kept as written.
pub(crate) fn unescape_mount(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| {
                digits.iter().try_fold(0u32, |acc, &b| {
                    (b'0'..=b'7')
                        .contains(&b)
                        .then(|| acc * 8 + u32::from(b - b'0'))
                })
            });
        if let Some(code) = code.and_then(|c| u8::try_from(c).ok()) {
            out.push(char::from(code));
            i += 4;
        } else {
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// (total, available to unprivileged users) bytes of the filesystem at `path`.
pub(super) fn statvfs(path: &str) -> Option<(u64, u64)> {
    let fs = rustix::fs::statvfs(path).ok()?;
    Some((
        fs.f_blocks.saturating_mul(fs.f_frsize),
        fs.f_bavail.saturating_mul(fs.f_frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount("/é"), "/é");
        assert_eq!(unescape_mount(r"/a\"), r"/a\");
        // Found by fuzzing (mounts target): a code above \377 overflowed a
        // byte (a panic with debug assertions). The kernel writes only the
        // four escapes, so anything else is kept as written.
        assert_eq!(unescape_mount(r"/a\777"), r"/a\777");
        assert_eq!(unescape_mount(r"/a\400b\377"), "/a\\400b\u{ff}");
        // An escape at the very end is decoded too.
        assert_eq!(unescape_mount(r"/mnt/x\040"), "/mnt/x ");
    }

    #[test]
    fn mountinfo_gives_unescaped_block_mount_points() {
        let text = "23 1 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw\n\
                    24 1 0:5 / /proc rw - proc proc rw\n\
                    25 1 0:6 / /run rw - tmpfs none rw\n";
        let mounts = mount_infos(text.as_bytes(), false);
        let found: Vec<_> = block_mounts(&mounts).collect();
        assert_eq!(found, [("/dev/sda1", "/mnt/my disk".to_owned(), "ext4")]);
    }

    /// Each line on its own: one that is not UTF-8 (any user's FUSE mount
    /// point) or that is garbage hides nothing else, and a line cut by the
    /// read bound is dropped.
    #[test]
    fn bad_mountinfo_lines_are_skipped() {
        let mut text = b"23 1 8:1 / / rw - ext4 /dev/sda1 rw\n".to_vec();
        text.extend_from_slice(b"40 23 0:50 / /home/u/caf\xe9 rw,nosuid - fuse.x /dev/sda9 rw\n");
        text.extend_from_slice(b"garbage\n\n");
        text.extend_from_slice(b"41 23 8:2 / /data rw - xfs /dev/sda2 rw\n");
        // Cut in its last field: it would still parse.
        text.extend_from_slice(b"42 23 8:3 / /cut rw - ext4 /dev/sda3 r");
        let points = |cut| -> Vec<String> {
            let mounts = mount_infos(&text, cut);
            block_mounts(&mounts).map(|(_, point, _)| point).collect()
        };
        assert_eq!(points(true), ["/", "/data"]);
        // Not at the bound: a last line without its newline is whole.
        assert_eq!(points(false), ["/", "/data", "/cut"]);
    }

    /// Only block devices: not FUSE (any user can name its source
    /// `/dev/...`, and its server may never answer `statvfs`), not major 0
    /// unless btrfs or bcachefs (their mounts all show an anonymous device).
    #[test]
    fn fuse_and_anonymous_devices_are_not_disks() {
        let text = "30 1 0:40 / /home/u/fake rw - fuse /dev/sda1 rw\n\
                    31 1 0:41 / /home/u/ssh rw - fuse.sshfs /dev/sdb rw\n\
                    32 1 0:42 / /odd rw - ext4 /dev/loop9 rw\n\
                    33 1 0:43 /@home /home rw - btrfs /dev/nvme0n1p3 rw\n\
                    34 1 8:17 / /win rw - fuseblk /dev/sdb1 rw\n\
                    35 1 259:2 / /boot rw - vfat /dev/nvme0n1p1 rw\n";
        let mounts = mount_infos(text.as_bytes(), false);
        let found: Vec<String> = block_mounts(&mounts).map(|(_, p, _)| p).collect();
        assert_eq!(found, ["/home", "/win", "/boot"]);
    }
}
