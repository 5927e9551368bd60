//! ACPI tables (RSDP → XSDT → FADT/FACS/DSDT, MADT) describing the CPUs, the interrupt
//! controllers, the fixed-hardware power management registers (PM1a: power button, S5) and the
//! reset register. Built as bytes placed at `layout::ACPI_START`; pure, so tests can parse them.

use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use super::layout;
use crate::devices::legacy::{i8042, pm, serial};

const OEM_ID: [u8; 6] = *b"VIREO ";
const OEM_TABLE_ID: [u8; 8] = *b"VIREOVMM";
const OEM_REVISION: u32 = 1;

/// The `_S5_` sleep type value our PM1a control register treats as "power off".
pub const SLP_TYP_S5: u8 = 5;
/// ACPI SCI interrupt (ISA IRQ 9, level triggered, active high as the MADT override says).
pub const SCI_IRQ: u32 = 9;

/// Flags of a MADT interrupt source override: active high (01), level triggered (11 << 2).
const MPS_INTI_ACTIVE_HIGH_LEVEL: u16 = 0x1 | (0x3 << 2);
const MADT_PCAT_COMPAT: u32 = 1;
const MADT_TYPE_LOCAL_APIC: u8 = 0;
const MADT_TYPE_IO_APIC: u8 = 1;
const MADT_TYPE_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_TYPE_LOCAL_APIC_NMI: u8 = 4;
const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
const IAPC_BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const CMOS_CENTURY_REGISTER: u8 = 0x32;

/// One virtio-mmio device to describe in the DSDT (`LNRO0005`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Base of its 4 KiB register window.
    pub addr: u64,
    /// Its window's length.
    pub len: u64,
    /// Its GSI (IOAPIC pin).
    pub irq: u32,
}

/// ACPI tables ready to be copied into guest memory.
#[derive(Debug)]
pub struct AcpiTables {
    /// Guest address of the RSDP (what PVH start info and the zero page point at).
    pub rsdp_addr: u64,
    /// (guest address, bytes) of every table.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

/// Builds the tables for `vcpus` CPUs and the given virtio-mmio devices.
pub fn build_tables(vcpus: u8, mmio_devices: &[MmioDeviceInfo]) -> AcpiTables {
    let mut placer = TablePlacer::new(layout::ACPI_START);
    let rsdp_addr = placer.reserve(Rsdp::len(), 16);
    let dsdt = placer.place(dsdt(mmio_devices), 16);
    let facs = placer.place(facs(), 64);
    let fadt = placer.place(fadt(facs.0, dsdt.0), 16);
    let madt = placer.place(madt(vcpus), 16);
    let mut xsdt_table = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt_table.add_entry(fadt.0);
    xsdt_table.add_entry(madt.0);
    let xsdt = placer.place(aml_bytes(&xsdt_table), 16);
    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt.0));
    let blobs = vec![(rsdp_addr, rsdp), dsdt, facs, fadt, madt, xsdt];
    AcpiTables { rsdp_addr, blobs }
}

/// Hands out addresses for consecutive tables.
struct TablePlacer {
    next: u64,
}

impl TablePlacer {
    fn new(start: u64) -> Self {
        TablePlacer { next: start }
    }

    fn reserve(&mut self, len: usize, align: u64) -> u64 {
        let addr = self.next.next_multiple_of(align);
        self.next = addr + len as u64;
        addr
    }

    fn place(&mut self, bytes: Vec<u8>, align: u64) -> (u64, Vec<u8>) {
        (self.reserve(bytes.len(), align), bytes)
    }
}

fn aml_bytes(item: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    item.to_aml_bytes(&mut bytes);
    bytes
}

fn dsdt(mmio_devices: &[MmioDeviceInfo]) -> Vec<u8> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let com1 = aml_bytes(&aml::Device::new(
        "COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(serial::COM1_PORT, serial::COM1_PORT, 1, 8),
                    &aml::Interrupt::new(true, true, false, false, serial::COM1_IRQ),
                ]),
            ),
        ],
    ));
    let mut sb_children = com1;
    for (i, device) in mmio_devices.iter().enumerate() {
        sb_children.extend(virtio_mmio_device(i, device));
    }
    table.append_slice(&aml::Scope::raw("\\_SB_".into(), sb_children));
    let s5 = aml::Package::new(vec![&SLP_TYP_S5, &SLP_TYP_S5, &aml::ZERO, &aml::ZERO]);
    aml::Name::new("_S5_".into(), &s5).to_aml_bytes(&mut table);
    table.update_checksum();
    table.as_slice().to_vec()
}

fn virtio_mmio_device(index: usize, device: &MmioDeviceInfo) -> Vec<u8> {
    let name = format!("V{index:03X}");
    let uid = index as u32;
    aml_bytes(&aml::Device::new(
        name.as_str().into(),
        vec![
            &aml::Name::new("_HID".into(), &"LNRO0005"),
            &aml::Name::new("_UID".into(), &uid),
            &aml::Name::new("_CCA".into(), &aml::ONE),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::Memory32Fixed::new(true, device.addr as u32, device.len as u32),
                    &aml::Interrupt::new(true, true, false, false, device.irq),
                ]),
            ),
        ],
    ))
}

fn facs() -> Vec<u8> {
    aml_bytes(&FACS::new())
}

fn fadt(facs_addr: u64, dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(facs_addr as u32)
        .firmware_ctrl_64(facs_addr)
        .dsdt_32(dsdt_addr as u32)
        .dsdt_64(dsdt_addr)
        .preferred_pm_profile(PmProfile::EnterpriseServer)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .flag(Flags::Headless);
    fadt.sci_int = (SCI_IRQ as u16).into();
    fadt.pm1a_evt_blk = u32::from(pm::PM1A_EVT_PORT).into();
    fadt.pm1a_cnt_blk = u32::from(pm::PM1A_CNT_PORT).into();
    fadt.pm1_evt_len = pm::PM1_EVT_LEN;
    fadt.pm1_cnt_len = pm::PM1_CNT_LEN;
    fadt.x_pm1a_evt_blk = io_register(pm::PM1A_EVT_PORT, pm::PM1_EVT_LEN, AccessSize::WordAccess);
    fadt.x_pm1a_cnt_blk = io_register(pm::PM1A_CNT_PORT, pm::PM1_CNT_LEN, AccessSize::WordAccess);
    fadt.reset_reg = io_register(i8042::COMMAND_PORT, 1, AccessSize::ByteAccess);
    fadt.reset_value = i8042::CMD_RESET_CPU;
    fadt.iapc_boot_arch = (IAPC_BOOT_ARCH_8042 | IAPC_BOOT_ARCH_NO_VGA).into();
    fadt.century = CMOS_CENTURY_REGISTER;
    aml_bytes(&fadt.finalize())
}

fn io_register(port: u16, len_bytes: u8, access: AccessSize) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        len_bytes * 8,
        0,
        access,
        u64::from(port),
    )
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut table = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.write_u32(36, layout::APIC_START as u32);
    table.write_u32(40, MADT_PCAT_COMPAT);
    for cpu in 0..vcpus {
        // Processor Local APIC: uid, APIC id, flags (enabled).
        table.append_slice(&[MADT_TYPE_LOCAL_APIC, 8, cpu, cpu]);
        table.append_slice(&1u32.to_le_bytes());
    }
    // IO APIC: id, reserved, address, GSI base.
    table.append_slice(&[MADT_TYPE_IO_APIC, 12, vcpus, 0]);
    table.append_slice(&(layout::IOAPIC_START as u32).to_le_bytes());
    table.append_slice(&0u32.to_le_bytes());
    // The SCI is level triggered and active high on its own pin.
    table.append_slice(&[MADT_TYPE_INTERRUPT_OVERRIDE, 10, 0, SCI_IRQ as u8]);
    table.append_slice(&SCI_IRQ.to_le_bytes());
    table.append_slice(&MPS_INTI_ACTIVE_HIGH_LEVEL.to_le_bytes());
    // LINT1 of every processor is the NMI input.
    table.append_slice(&[MADT_TYPE_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    table.update_checksum();
    table.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(tables: &AcpiTables, addr: u64) -> &[u8] {
        &tables
            .blobs
            .iter()
            .find(|(a, _)| *a == addr)
            .expect("table at address")
            .1
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
    }

    #[test]
    fn every_table_checksums_and_the_rsdp_chain_parses() {
        let tables = build_tables(2, &[]);
        assert_eq!(tables.rsdp_addr, layout::ACPI_START);
        let rsdp = table(&tables, tables.rsdp_addr);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]), "RSDP v1 checksum");
        assert!(checksum_ok(rsdp), "RSDP extended checksum");
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");
        let xsdt = table(&tables, u64_at(rsdp, 24));
        assert_eq!(&xsdt[0..4], b"XSDT");
        assert!(checksum_ok(xsdt));
        let fadt = table(&tables, u64_at(xsdt, 36));
        let madt = table(&tables, u64_at(xsdt, 44));
        for t in [fadt, madt] {
            assert_eq!(u32_at(t, 4) as usize, t.len(), "header length");
            assert!(checksum_ok(t));
        }
        assert_eq!(&fadt[0..4], b"FACP");
        assert_eq!(&madt[0..4], b"APIC");
        let dsdt = table(&tables, u64_at(fadt, 140));
        assert_eq!(&dsdt[0..4], b"DSDT");
        assert!(checksum_ok(dsdt));
        assert_eq!(&table(&tables, u64_at(fadt, 132))[0..4], b"FACS");
        // All tables sit in the reserved BIOS area.
        for (addr, bytes) in &tables.blobs {
            assert!(
                *addr >= layout::ACPI_START
                    && addr + bytes.len() as u64 <= layout::HIGH_MEMORY_START
            );
        }
    }

    #[test]
    fn fadt_describes_pm1a_sci_and_reset_register() {
        let tables = build_tables(1, &[]);
        let fadt = &tables
            .blobs
            .iter()
            .find(|(_, b)| &b[0..4] == b"FACP")
            .unwrap()
            .1;
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9, "SCI_INT");
        assert_eq!(
            u32_at(fadt, 48),
            0,
            "no SMI command port: ACPI is always enabled"
        );
        assert_eq!(u32_at(fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!((fadt[88], fadt[89]), (4, 2), "PM1_EVT_LEN, PM1_CNT_LEN");
        let flags = u32_at(fadt, 112);
        assert_eq!(flags & (1 << 4), 0, "fixed power button present");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(flags & (1 << 20), 0, "not hardware reduced");
        // RESET_REG: SystemIO, 8 bits, port 0x64; RESET_VALUE 0xfe.
        assert_eq!((fadt[116], fadt[117]), (1, 8));
        assert_eq!(u64_at(fadt, 120), 0x64);
        assert_eq!(fadt[128], 0xfe);
    }

    #[test]
    fn madt_lists_each_cpu_the_ioapic_and_the_sci_override() {
        let tables = build_tables(3, &[]);
        let madt = &tables
            .blobs
            .iter()
            .find(|(_, b)| &b[0..4] == b"APIC")
            .unwrap()
            .1;
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");
        let mut offset = 44;
        let mut cpus = Vec::new();
        let mut ioapic = None;
        let mut overrides = Vec::new();
        while offset < madt.len() {
            let (kind, len) = (madt[offset], madt[offset + 1] as usize);
            match kind {
                0 => cpus.push((madt[offset + 3], u32_at(madt, offset + 4))),
                1 => ioapic = Some(u32_at(madt, offset + 4)),
                2 => overrides.push((madt[offset + 3], u32_at(madt, offset + 4), madt[offset + 8])),
                _ => {}
            }
            offset += len;
        }
        assert_eq!(offset, madt.len());
        assert_eq!(cpus, vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(ioapic, Some(0xfec0_0000));
        assert_eq!(overrides, vec![(9, 9, 0x0d)]);
    }

    #[test]
    fn dsdt_carries_s5_com1_and_virtio_devices() {
        let device = MmioDeviceInfo {
            addr: 0xd000_0000,
            len: 0x1000,
            irq: 5,
        };
        let tables = build_tables(1, &[device]);
        let dsdt = &tables
            .blobs
            .iter()
            .find(|(_, b)| &b[0..4] == b"DSDT")
            .unwrap()
            .1;
        let find = |needle: &[u8]| dsdt.windows(needle.len()).position(|w| w == needle);
        let s5 = find(b"_S5_").expect("_S5_ object");
        // PackageOp, PkgLength, NumElements 4, then BytePrefix SLP_TYPa.
        assert_eq!(dsdt[s5 + 4], 0x12);
        assert_eq!(dsdt[s5 + 6], 4);
        assert_eq!(&dsdt[s5 + 7..s5 + 9], &[0x0a, SLP_TYP_S5]);
        assert!(find(b"LNRO0005").is_some());
        assert!(find(&0xd000_0000u32.to_le_bytes()).is_some());
        assert!(find(b"COM1").is_some());
    }
}
