#!/usr/bin/env bash
# The main job: vireod with its embedded default configuration (https://127.0.0.1:8443/sdk,
# data in ./vireo-data) and a ready sample VM, "sample-vm" (2 vCPUs, 128 MiB, a 64 MiB qcow2
# disk, a NIC on "VM Network", booting the test guest into its serial shell with its guest tools
# running, so ShutdownGuest, RebootGuest and guest identity work, and an empty CD-ROM drive for
# MountToolsInstaller; scripts/sample-vm.vmx). The root
# password is printed at the first start (or set VIREO_ROOT_PASSWORD). Connect with pyVmomi:
#   SmartConnect(host="127.0.0.1", port=8443, user="root", pwd=..., disableSslCertValidation=True)
# and power the VM on, e.g. searchIndex.FindByInventoryPath("ha-datacenter/vm/sample-vm").PowerOnVM_Task().
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup/10-test-guest.sh >/dev/null
# "VM Network" is NAT by default: nft and dnsmasq must be there.
scripts/setup/40-network-tools.sh
# The tools installer ISO (MountToolsInstaller, UpgradeTools_Task), vireod's default tools_iso.
scripts/setup/50-tools-iso.sh
cargo build --release -p vireo-vmm -p vireo-disk -p vireo-agent --bins
data=${VIREO_DATA_DIR:-vireo-data}
vm="$data/datastore1/sample-vm"
if [ ! -e "$data/vm-inventory" ] && [ ! -e "$vm/sample-vm.vmx" ]; then
    mkdir -p "$vm"
    cp .cache/test-guest/vireo-test-guest.elf "$vm/"
    target/release/vdisk create "$vm/sample-vm.qcow2" 64M >/dev/null
    cp scripts/sample-vm.vmx "$vm/sample-vm.vmx"
    echo "created the sample VM in $vm"
fi
exec target/release/vireod --data-dir "$data"
