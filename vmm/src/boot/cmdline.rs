//! The guest kernel command line: fixed defaults, one entry per virtio-mmio
//! device, then the user's extra arguments.

use linux_loader::cmdline::{Cmdline, Error as LoaderCmdlineError};
use vm_memory::GuestAddress;

use super::layout::{CMDLINE_MAX_SIZE, VIRTIO_MMIO_SLOT_SIZE};

/// Serial console argument, left out with `--console none`.
pub const CONSOLE_ARG: &str = "console=ttyS0";
/// What `--console none` gives the guest instead: no 8250 ports at all.
/// Without `console=` the kernel would still make the first serial port its
/// console, and every byte the guest writes there costs a VM exit for output
/// the VMM drops. The guest's init then starts with no console descriptors.
pub const NO_CONSOLE_ARG: &str = "8250.nr_uarts=0";
/// Arguments every guest gets: reset through the i8042 on reboot (the VMM
/// exits on it), reboot on panic, a quiet boot (the console costs a VM exit
/// per byte), and an i8042 driver that only takes the keyboard's bytes (for
/// ctrl-alt-del): no mouse port, no multiplexer and no keyboard probing, so it
/// waits on nothing at boot (as Firecracker's guests do). `i8042.nopnp` only
/// matters for kernels with PNP (vessel's has none; the kernel drops unknown
/// dotted arguments silently). The guest kernel has no PCI or modules, so
/// `pci=off` and `nomodule` would only reach init as stray arguments.
pub const DEFAULT_ARGS: &str =
    "reboot=k panic=1 quiet i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// Error building the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// The result would not fit the kernel's buffer.
    #[error("kernel command line too long: the limit is {} bytes with the defaults and virtio devices included (--cmdline)", CMDLINE_MAX_SIZE - 1)]
    TooLong,
    /// `--cmdline` has a character outside printable ASCII.
    #[error("--cmdline: only printable ASCII characters are allowed")]
    InvalidChar,
    /// Any other rejection by the command-line builder.
    #[error("--cmdline: {0}")]
    Invalid(String),
}

impl From<LoaderCmdlineError> for CmdlineError {
    fn from(e: LoaderCmdlineError) -> Self {
        match e {
            LoaderCmdlineError::TooLarge => CmdlineError::TooLong,
            LoaderCmdlineError::InvalidAscii | LoaderCmdlineError::NullTerminator => {
                CmdlineError::InvalidChar
            }
            other => CmdlineError::Invalid(other.to_string()),
        }
    }
}

/// A virtio-mmio device as the kernel command line announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioArg {
    /// Base address of the device's 4 KiB slot.
    pub base: u64,
    /// Its IRQ (IO-APIC pin).
    pub irq: u32,
}

/// Builds the full command line.
pub fn build(
    serial_console: bool,
    devices: &[VirtioMmioArg],
    extra: Option<&str>,
) -> Result<Cmdline, CmdlineError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(CmdlineError::from)?;
    cmdline.insert_str(if serial_console {
        CONSOLE_ARG
    } else {
        NO_CONSOLE_ARG
    })?;
    cmdline.insert_str(DEFAULT_ARGS)?;
    for dev in devices {
        cmdline.add_virtio_mmio_device(
            VIRTIO_MMIO_SLOT_SIZE,
            GuestAddress(dev.base),
            dev.irq,
            None,
        )?;
    }
    if let Some(extra) = extra {
        let (boot_args, init_args) = split_init_args(extra.trim());
        if !boot_args.is_empty() {
            cmdline.insert_str(boot_args)?;
        }
        if let Some(init_args) = init_args.filter(|a| !a.is_empty()) {
            cmdline.insert_init_args(init_args)?;
        }
    }
    Ok(cmdline)
}

/// Splits `boot args -- init args` at the first ` -- ` (or a leading `-- `).
fn split_init_args(s: &str) -> (&str, Option<&str>) {
    if s == "--" {
        return ("", Some(""));
    }
    if let Some(rest) = s.strip_prefix("-- ") {
        return ("", Some(rest.trim()));
    }
    match s.split_once(" -- ") {
        Some((boot, init)) => (boot.trim(), Some(init.trim())),
        None => match s.strip_suffix(" --") {
            Some(boot) => (boot.trim(), None),
            None => (s, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn defaults_devices_then_extra() {
        let devs = [
            VirtioMmioArg {
                base: 0xd000_0000,
                irq: 5,
            },
            VirtioMmioArg {
                base: 0xd000_1000,
                irq: 6,
            },
        ];
        let c = build(true, &devs, Some("loglevel=7")).unwrap();
        assert_eq!(
            text(&c),
            format!(
                "console=ttyS0 {DEFAULT_ARGS} \
                 virtio_mmio.device=4K@0xd0000000:5 \
                 virtio_mmio.device=4K@0xd0001000:6 loglevel=7"
            )
        );
    }

    #[test]
    fn no_console_drops_console_arg() {
        let c = build(false, &[], None).unwrap();
        assert_eq!(text(&c), format!("{NO_CONSOLE_ARG} {DEFAULT_ARGS}"));
    }

    #[test]
    fn init_args_go_last() {
        let c = build(false, &[], Some("foo=1 -- -v  x")).unwrap();
        assert!(text(&c).ends_with("dumbkbd foo=1 -- -v  x"));
        let c = build(false, &[], Some("-- hello")).unwrap();
        assert!(text(&c).ends_with("dumbkbd -- hello"));
    }

    #[test]
    fn length_limit() {
        let base = build(true, &[], None).unwrap();
        let room = CMDLINE_MAX_SIZE - 1 - text(&base).len() - 1; // minus NUL and a space
        let fits = "a".repeat(room);
        let c = build(true, &[], Some(&fits)).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().as_bytes_with_nul().len(),
            CMDLINE_MAX_SIZE
        );
        let too_long = "a".repeat(room + 1);
        assert_eq!(
            build(true, &[], Some(&too_long)).unwrap_err(),
            CmdlineError::TooLong
        );
    }

    #[test]
    fn rejects_control_characters() {
        assert_eq!(
            build(true, &[], Some("a\nb")).unwrap_err(),
            CmdlineError::InvalidChar
        );
        assert_eq!(
            build(true, &[], Some("é")).unwrap_err(),
            CmdlineError::InvalidChar
        );
    }
}
