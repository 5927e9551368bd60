//! The Multiple APIC Description Table: the enabled CPUs (Local APIC and x2APIC entries),
//! the IOAPICs, the ISA interrupt source overrides, and the LAPIC address.

use super::sdt::Sdt;
use crate::phys::LeBytes;

const MAX_CPUS: usize = 256;
const MAX_IOAPICS: usize = 8;
const MAX_OVERRIDES: usize = 16;
const ENTRIES_OFFSET: usize = 44;
const FLAG_ENABLED: u32 = 1;

const TYPE_LOCAL_APIC: u8 = 0;
const TYPE_IOAPIC: u8 = 1;
const TYPE_SOURCE_OVERRIDE: u8 = 2;
const TYPE_LAPIC_ADDRESS: u8 = 5;
const TYPE_LOCAL_X2APIC: u8 = 9;

/// An IOAPIC: its MMIO base and the first GSI it serves.
#[derive(Clone, Copy, Default, Debug)]
pub struct IoApicEntry {
    /// MMIO base.
    pub address: u64,
    /// GSI of its pin 0.
    pub gsi_base: u32,
}

/// An ISA IRQ wired to another GSI or with non-ISA polarity/trigger.
#[derive(Clone, Copy, Default, Debug)]
pub struct SourceOverride {
    /// ISA IRQ.
    pub source: u8,
    /// Where it really arrives.
    pub gsi: u32,
    /// MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2.
    pub flags: u16,
}

/// The parsed MADT.
pub struct Madt {
    /// Local APIC MMIO base (type 5 override applied).
    pub lapic_address: u64,
    cpus: [u32; MAX_CPUS],
    cpu_count: usize,
    ioapics: [IoApicEntry; MAX_IOAPICS],
    ioapic_count: usize,
    overrides: [SourceOverride; MAX_OVERRIDES],
    override_count: usize,
}

impl Madt {
    /// Reads a (checksum-verified) MADT; malformed entries end the walk.
    pub fn parse(table: &Sdt) -> Madt {
        let t = table.bytes();
        let mut madt = Madt {
            lapic_address: u64::from(t.u32_at(36).unwrap_or(0xfee0_0000)),
            cpus: [0; MAX_CPUS],
            cpu_count: 0,
            ioapics: [IoApicEntry::default(); MAX_IOAPICS],
            ioapic_count: 0,
            overrides: [SourceOverride::default(); MAX_OVERRIDES],
            override_count: 0,
        };
        let mut offset = ENTRIES_OFFSET;
        while let (Some(kind), Some(length)) = (t.u8_at(offset), t.u8_at(offset + 1)) {
            let Some(entry) = t
                .get(offset..offset + usize::from(length))
                .filter(|_| length >= 2)
            else {
                break;
            };
            madt.add_entry(kind, entry);
            offset += usize::from(length);
        }
        madt
    }

    fn add_entry(&mut self, kind: u8, entry: &[u8]) {
        match kind {
            TYPE_LOCAL_APIC => {
                if let (Some(id), Some(flags)) = (entry.u8_at(3), entry.u32_at(4)) {
                    self.add_cpu(u32::from(id), flags);
                }
            }
            TYPE_LOCAL_X2APIC => {
                if let (Some(id), Some(flags)) = (entry.u32_at(4), entry.u32_at(8)) {
                    self.add_cpu(id, flags);
                }
            }
            TYPE_IOAPIC => {
                if let (Some(address), Some(gsi_base)) = (entry.u32_at(4), entry.u32_at(8)) {
                    let ioapic = IoApicEntry {
                        address: u64::from(address),
                        gsi_base,
                    };
                    push(&mut self.ioapics, &mut self.ioapic_count, ioapic);
                }
            }
            TYPE_SOURCE_OVERRIDE => {
                if let (Some(source), Some(gsi), Some(flags)) =
                    (entry.u8_at(3), entry.u32_at(4), entry.u16_at(8))
                {
                    let source_override = SourceOverride { source, gsi, flags };
                    push(
                        &mut self.overrides,
                        &mut self.override_count,
                        source_override,
                    );
                }
            }
            TYPE_LAPIC_ADDRESS => {
                if let Some(address) = entry.u64_at(4) {
                    self.lapic_address = address;
                }
            }
            _ => {}
        }
    }

    fn add_cpu(&mut self, apic_id: u32, flags: u32) {
        let duplicate = self.cpus().contains(&apic_id);
        if flags & FLAG_ENABLED != 0 && !duplicate {
            push(&mut self.cpus, &mut self.cpu_count, apic_id);
        }
    }

    /// APIC ids of the enabled CPUs, in table order.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus[..self.cpu_count]
    }

    /// The IOAPIC serving `gsi` (the one with the highest GSI base not above it) and its pin.
    pub fn ioapic_for(&self, gsi: u32) -> Option<(IoApicEntry, u8)> {
        let ioapic = self.ioapics[..self.ioapic_count]
            .iter()
            .filter(|ioapic| ioapic.gsi_base <= gsi)
            .max_by_key(|ioapic| ioapic.gsi_base)?;
        let pin = u8::try_from(gsi - ioapic.gsi_base).ok()?;
        Some((*ioapic, pin))
    }

    /// The override for ISA IRQ `irq`, if any.
    pub fn source_override(&self, irq: u8) -> Option<SourceOverride> {
        self.overrides[..self.override_count]
            .iter()
            .find(|o| o.source == irq)
            .copied()
    }
}

fn push<T>(array: &mut [T], count: &mut usize, item: T) {
    if let Some(slot) = array.get_mut(*count) {
        *slot = item;
        *count += 1;
    }
}
