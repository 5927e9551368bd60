#!/usr/bin/env bash
# The main job: vireod with its embedded default configuration (https://127.0.0.1:8443/sdk,
# data in ./vireo-data) and a ready sample VM, "sample-vm" (2 vCPUs, 128 MiB, a 64 MiB qcow2
# disk, a NIC on "VM Network", booting the test guest into its serial shell). The root
# password is printed at the first start (or set VIREO_ROOT_PASSWORD). Connect with pyVmomi:
#   SmartConnect(host="127.0.0.1", port=8443, user="root", pwd=..., disableSslCertValidation=True)
# and power the VM on, e.g. searchIndex.FindByInventoryPath("ha-datacenter/vm/sample-vm").PowerOnVM_Task().
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup/10-test-guest.sh >/dev/null
cargo build --release -p vireo-vmm -p vireo-disk -p vireo-agent --bins
data=${VIREO_DATA_DIR:-vireo-data}
vm="$data/datastore1/sample-vm"
if [ ! -e "$data/vm-inventory" ] && [ ! -e "$vm/sample-vm.vmx" ]; then
    mkdir -p "$vm"
    cp .cache/test-guest/vireo-test-guest.elf "$vm/"
    target/release/vdisk create "$vm/sample-vm.qcow2" 64M >/dev/null
    cat > "$vm/sample-vm.vmx" <<'VMX'
displayName = "sample-vm"
guestOS = "otherLinux64"
numvcpus = "2"
memsize = "128"
disk0.present = "TRUE"
disk0.fileName = "sample-vm.qcow2"
ethernet0.present = "TRUE"
ethernet0.networkName = "VM Network"
ethernet0.address = "00:50:56:00:00:01"
vireo.boot.kernel = "[datastore1] sample-vm/vireo-test-guest.elf"
vireo.boot.cmdline = "scenario=shell"
VMX
    echo "created the sample VM in $vm"
fi
exec target/release/vireod --data-dir "$data"
