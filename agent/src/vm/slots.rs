//! Where a VM's disks sit: a unit of its paravirtual SCSI controller (key 1000, always there)
//! or of its SATA controller (key 15000, there once configured: `sata0.present`), recorded per
//! disk as `diskN.slot = "scsi0:1"`. The slot is what clients see and ask for (controllerKey,
//! unitNumber); underneath, every disk is a virtio-blk device either way, in disk order.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

/// Key of the paravirtual SCSI controller.
pub const SCSI_KEY: i32 = 1000;
/// Key of the SATA (AHCI) controller.
pub const SATA_KEY: i32 = 15000;
/// Units on the SCSI controller (unit 7 is the controller's own).
const SCSI_UNITS: u8 = 16;
/// The SCSI controller's own unit.
const SCSI_SELF_UNIT: u8 = 7;
/// Units on the SATA controller.
pub const SATA_UNITS: u8 = 30;

/// The controller a disk sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// The paravirtual SCSI controller.
    Scsi,
    /// The SATA controller.
    Sata,
}

impl Bus {
    fn name(self) -> &'static str {
        match self {
            Bus::Scsi => "scsi",
            Bus::Sata => "sata",
        }
    }

    /// The controller's device key.
    pub fn controller_key(self) -> i32 {
        match self {
            Bus::Scsi => SCSI_KEY,
            Bus::Sata => SATA_KEY,
        }
    }

    fn has_unit(self, unit: u8) -> bool {
        match self {
            Bus::Scsi => unit < SCSI_UNITS && unit != SCSI_SELF_UNIT,
            Bus::Sata => unit < SATA_UNITS,
        }
    }
}

/// A disk's place: controller and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSlot {
    /// Its controller.
    pub bus: Bus,
    /// Its unit on the controller.
    pub unit: u8,
}

impl DiskSlot {
    /// The `.vmx` spelling (`scsi0:1`).
    pub fn to_vmx(self) -> String {
        format!("{}0:{}", self.bus.name(), self.unit)
    }

    /// A slot from its `.vmx` spelling; None when it names no unit of ours.
    pub fn parse(text: &str) -> Option<DiskSlot> {
        let lower = text.trim().to_ascii_lowercase();
        let (bus, unit) = if let Some(rest) = lower.strip_prefix("scsi0:") {
            (Bus::Scsi, rest)
        } else {
            (Bus::Sata, lower.strip_prefix("sata0:")?)
        };
        let unit: u8 = unit.parse().ok()?;
        bus.has_unit(unit).then_some(DiskSlot { bus, unit })
    }

    /// The first unit of `bus` that none of `taken` holds.
    pub fn first_free(bus: Bus, taken: &[DiskSlot]) -> Option<DiskSlot> {
        (0..SATA_UNITS.max(SCSI_UNITS))
            .map(|unit| DiskSlot { bus, unit })
            .find(|slot| bus.has_unit(slot.unit) && !taken.contains(slot))
    }
}

/// Why a disk cannot sit where a change puts it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    /// The change names the SATA controller of a VM without one.
    #[error("The VM has no SATA controller: add one first.")]
    NoSataController,
    /// A second SATA controller, or one on another bus.
    #[error("A VM on this host has one SATA controller (bus 0).")]
    OneSataController,
    /// A unit the controller does not have.
    #[error("The {} controller has no unit {unit}.", .bus.name())]
    NoSuchUnit {
        /// The unit asked for.
        unit: i64,
        /// The controller.
        bus: Bus,
    },
    /// A unit another device holds.
    #[error("Unit {} of the {} controller already holds a disk.", .0.unit, .0.bus.name())]
    Taken(DiskSlot),
    /// Every unit is taken.
    #[error("The {} controller has no free unit.", .0.name())]
    Full(Bus),
    /// The SATA controller still holds devices.
    #[error("The SATA controller still holds devices: remove them first.")]
    InUse,
}

/// The VM's SATA controller as a configuration change leaves it: whether it is there and the
/// keys a change's devices may name it by (15000, and the temporary key of one just added).
#[derive(Debug, Clone, Default)]
pub struct SataController {
    /// Whether the VM has it.
    pub present: bool,
    keys: Vec<i64>,
}

impl SataController {
    /// The controller of a VM that has one (`present`) or not.
    pub fn new(present: bool) -> SataController {
        SataController {
            present,
            keys: vec![i64::from(SATA_KEY)],
        }
    }

    /// Whether a change's device names this controller by `key`.
    pub fn is_named_by(&self, key: i64) -> bool {
        self.keys.contains(&key)
    }

    /// Whether `device` is a SATA controller.
    pub fn is_sata(schema: &Schema, device: &DataObject) -> bool {
        schema.is_a(device.ty, schema.known_type("VirtualSATAController"))
    }

    /// Takes an added SATA controller `device` as the VM's.
    pub fn add(&mut self, schema: &Schema, device: &DataObject) -> Result<(), SlotError> {
        let bus = device.get(schema, "busNumber").and_then(Value::as_i64);
        if self.present || bus.is_some_and(|b| b != 0) {
            return Err(SlotError::OneSataController);
        }
        self.present = true;
        if let Some(key) = device.get(schema, "key").and_then(Value::as_i64) {
            self.keys.push(key);
        }
        Ok(())
    }

    /// Takes the SATA controller away, when `taken` (the slots the change leaves) has no disk on it.
    pub fn remove(&mut self, taken: &[DiskSlot]) -> Result<(), SlotError> {
        if taken.iter().any(|s| s.bus == Bus::Sata) {
            return Err(SlotError::InUse);
        }
        self.present = false;
        Ok(())
    }

    /// The slot an added disk `device` asks for: the SATA controller when its controllerKey
    /// names it, else the SCSI one (any other controller a client adds stands for it); the
    /// unit it names (free, and one the controller has) or the first free one.
    pub fn slot_for(
        &self,
        schema: &Schema,
        device: &DataObject,
        taken: &[DiskSlot],
    ) -> Result<DiskSlot, SlotError> {
        let get = |name: &str| device.get(schema, name).and_then(Value::as_i64);
        let bus = match get("controllerKey") {
            Some(key) if self.keys.contains(&key) => {
                if !self.present {
                    return Err(SlotError::NoSataController);
                }
                Bus::Sata
            }
            _ => Bus::Scsi,
        };
        match get("unitNumber") {
            None => DiskSlot::first_free(bus, taken).ok_or(SlotError::Full(bus)),
            Some(unit) => {
                let slot = u8::try_from(unit)
                    .ok()
                    .filter(|&u| bus.has_unit(u))
                    .map(|unit| DiskSlot { bus, unit })
                    .ok_or(SlotError::NoSuchUnit { unit, bus })?;
                if taken.contains(&slot) {
                    return Err(SlotError::Taken(slot));
                }
                Ok(slot)
            }
        }
    }
}

/// Slots for disks read from a `.vmx`: each recorded one that is valid and not yet taken,
/// the first free SCSI unit for the others (older files record none).
pub fn settle(recorded: &[Option<DiskSlot>]) -> Vec<DiskSlot> {
    let mut taken: Vec<Option<DiskSlot>> = Vec::new();
    for slot in recorded {
        taken.push(slot.filter(|s| !taken.contains(&Some(*s))));
    }
    let mut settled: Vec<DiskSlot> = taken.iter().flatten().copied().collect();
    taken
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                let free = DiskSlot::first_free(Bus::Scsi, &settled).unwrap_or(DiskSlot {
                    bus: Bus::Sata,
                    unit: 0,
                });
                settled.push(free);
                free
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_through_the_vmx_spelling_and_refuse_other_units() {
        for text in ["scsi0:0", "scsi0:15", "sata0:29"] {
            assert_eq!(DiskSlot::parse(text).unwrap().to_vmx(), text);
        }
        for text in [
            "scsi0:7", "scsi0:16", "sata0:30", "scsi1:0", "ide0:0", "sata0:-1", "",
        ] {
            assert_eq!(DiskSlot::parse(text), None, "{text}");
        }
    }

    #[test]
    fn settling_keeps_recorded_slots_and_gives_the_rest_free_scsi_units() {
        let scsi = |unit| DiskSlot {
            bus: Bus::Scsi,
            unit,
        };
        let sata = DiskSlot {
            bus: Bus::Sata,
            unit: 3,
        };
        let settled = settle(&[None, Some(scsi(0)), Some(sata), Some(scsi(0)), None]);
        assert_eq!(settled, [scsi(1), scsi(0), sata, scsi(2), scsi(3)]);
        let full: Vec<_> = (0..7).map(|u| Some(scsi(u))).chain([None]).collect();
        assert_eq!(settle(&full)[7], scsi(8), "unit 7 is the controller's");
    }
}
