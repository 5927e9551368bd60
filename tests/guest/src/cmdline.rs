//! The kernel command line: space-separated `key=value` words. Unknown keys are ignored.

/// What the guest does once booted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    /// Power off through ACPI S5.
    PowerOff,
    /// Reset through the FADT reset register (or the i8042).
    Reboot,
    /// Wait for an ACPI power-button press, then power off.
    Wait,
    /// An interactive command interpreter on the console.
    Shell,
}

impl Scenario {
    /// The name used on the command line and in the booted line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PowerOff => "power-off",
            Scenario::Reboot => "reboot",
            Scenario::Wait => "wait",
            Scenario::Shell => "shell",
        }
    }

    fn from_name(name: &str) -> Option<Scenario> {
        [
            Scenario::PowerOff,
            Scenario::Reboot,
            Scenario::Wait,
            Scenario::Shell,
        ]
        .into_iter()
        .find(|scenario| scenario.name() == name)
    }
}

/// The value of the last `key=value` word for `key`.
pub fn value<'a>(cmdline: &'a str, key: &'a str) -> Option<&'a str> {
    values(cmdline, key).last()
}

/// The values of every `key=value` word for `key`, in order.
pub fn values<'a>(cmdline: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter(move |(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The scenario the command line asks for: `Ok(Shell)` when absent, `Err(name)` when unknown.
pub fn scenario(cmdline: &str) -> Result<Scenario, &str> {
    match value(cmdline, "scenario") {
        None => Ok(Scenario::Shell),
        Some(name) => Scenario::from_name(name).ok_or(name),
    }
}
